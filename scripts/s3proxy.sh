#!/usr/bin/env bash
# Fetches s3proxy (github.com/gaul/s3proxy, Apache-2.0), an S3 API server on
# a local directory, from Maven Central: the real S3-compatible server the
# backup tests (libs/backup, services/statestore) start on loopback.
#
# Usage: scripts/s3proxy.sh fetch     prints the jar's path
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.1.0 # needs Java 17
DIR=.fedsync/s3proxy
JAR=$DIR/s3proxy-$VERSION-jar-with-dependencies.jar
die() { echo "s3proxy.sh: $*" >&2; exit 1; }

case "${1:-}" in
fetch)
  if [ ! -s "$JAR" ]; then
    command -v mvn >/dev/null || die "mvn not found: needed to fetch s3proxy"
    mkdir -p "$DIR"
    echo "s3proxy.sh: fetching org.gaul:s3proxy:$VERSION from Maven into $DIR" >&2
    mvn -B -q dependency:copy -Dartifact="org.gaul:s3proxy:$VERSION:jar:jar-with-dependencies" -DoutputDirectory="$DIR" -Dmdep.useBaseVersion=true >&2 ||
      die "could not fetch org.gaul:s3proxy:$VERSION (jar-with-dependencies) from Maven Central"
  fi
  echo "$PWD/$JAR"
  ;;
*) die "usage: $0 fetch" ;;
esac
