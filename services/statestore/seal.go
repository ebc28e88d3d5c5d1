package statestore

// Values in the buckets that hold what agents wrote (documents, the commit
// log, conflicts and their outbox, outcomes) are sealed at rest with the
// service's keyring (libs/atrest, AES-256-GCM), each bound to its bucket and
// key: atrest.Put, Get and OpenValue. Ids, versions and counters stay in the
// clear: bbolt orders by them.
var sealedBuckets = [][]byte{bucketDocs, bucketLog, bucketConflicts, bucketConflictOutbox, bucketOutcomes}
