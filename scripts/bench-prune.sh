#!/usr/bin/env bash
# Prunes fedbench's results: keeps, in bench/results/, the latest run of every
# scenario and every run that docs/performance.md cites, and deletes the other
# runs' files. A run is every file whose name starts with
# <scenario>-<YYYY-MM-DDTHHMMSS> (its .json, .md, .svg and -perf-* profiles);
# files not named that way are left alone. A document cites a run by naming
# <scenario>-<YYYY-MM-DDTHHMMSS> anywhere in its text.
#
# Dry run by default: it lists what it would keep (and why) and delete. With
# --delete it deletes; commit the deletions yourself (git add -u bench/results).
#
#   scripts/bench-prune.sh                      # dry run
#   scripts/bench-prune.sh --delete             # make bench-prune DELETE=1
#   scripts/bench-prune.sh --dir DIR --cited FILE [--cited FILE ...]
set -euo pipefail

dir=bench/results
cited=()
delete=0
while [ $# -gt 0 ]; do
  case "$1" in
    --delete) delete=1 ;;
    --dir) dir=${2:?--dir needs a directory}; shift ;;
    --cited) cited+=("${2:?--cited needs a file}"); shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-prune: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#cited[@]} -gt 0 ] || cited=(docs/performance.md)
[ -d "$dir" ] || { echo "bench-prune: no directory $dir" >&2; exit 1; }
for f in "${cited[@]}"; do
  [ -f "$f" ] || { echo "bench-prune: cited document $f not found" >&2; exit 1; }
done

run_re='^([a-z0-9_]+)-([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6})'

# Runs the documents cite.
declare -A is_cited=()
while read -r r; do
  [ -n "$r" ] && is_cited[$r]=1
done < <(grep -ohE '[a-z0-9_]+-[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6}' "${cited[@]}" | sort -u)

# Every run in the directory, and the latest one per scenario (the timestamps
# sort as text).
declare -A latest=() runs=()
for path in "$dir"/*; do
  [ -f "$path" ] || continue
  name=${path##*/}
  [[ $name =~ $run_re ]] || continue
  scenario=${BASH_REMATCH[1]} run="${BASH_REMATCH[1]}-${BASH_REMATCH[2]}"
  runs[$run]=1
  if [[ -z ${latest[$scenario]:-} || $run > ${latest[$scenario]} ]]; then
    latest[$scenario]=$run
  fi
done

declare -A keep=()
for s in "${!latest[@]}"; do keep[${latest[$s]}]="latest $s"; done
for r in "${!is_cited[@]}"; do
  [ -n "${runs[$r]:-}" ] || continue
  if [ -n "${keep[$r]:-}" ]; then keep[$r]+=", cited"; else keep[$r]="cited"; fi
done

mode="would delete"
[ $delete -eq 1 ] && mode="deleting"
kept=0 gone=0
for r in $(printf '%s\n' "${!runs[@]}" | sort); do
  files=("$dir/$r".* "$dir/$r"-*)
  existing=()
  for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
  if [ -n "${keep[$r]:-}" ]; then
    echo "keep   $r (${keep[$r]}): ${#existing[@]} files"
    kept=$((kept + 1))
  else
    echo "$mode $r: ${existing[*]##*/}"
    gone=$((gone + 1))
    [ $delete -eq 1 ] && rm -f -- "${existing[@]}"
  fi
done

for r in "${!is_cited[@]}"; do
  [ -n "${runs[$r]:-}" ] || echo "note: ${cited[*]} cites $r, which is not in $dir" >&2
done
if [ $delete -eq 1 ]; then
  echo "bench-prune: kept $kept runs, deleted $gone; commit the deletions (git add -u $dir)"
else
  echo "bench-prune: would keep $kept runs and delete $gone (dry run; --delete to delete)"
fi
