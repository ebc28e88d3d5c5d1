module github.com/fedsync/fedsync/services/validation

go 1.26.7

require (
	github.com/fedsync/fedsync/libs v0.0.0
	github.com/fedsync/fedsync/proto v0.0.0
)

replace (
	github.com/fedsync/fedsync/libs => ../../libs
	github.com/fedsync/fedsync/proto => ../../proto
)
