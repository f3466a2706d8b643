#!/bin/bash
# usage: try_commit.sh <commit> <label>
set -e
git -C /tmp/wt-old checkout -q --detach "$1"
cd /tmp/wt-old
export PYTHONPATH=$(sed 's#/work/main#/tmp/wt-old#' /work/main/.venv/lib/python3.11/site-packages/_spinup.pth | paste -sd:)
timeout 900 .venv/bin/python -m bench.ab --rounds 2 --kinds cache,webhook --out /tmp/s2/ab-$2.json > /tmp/s2/ab-$2.log 2>&1
echo "== $1 $2"; grep -A3 "^/cache\|^/webhook" /tmp/s2/ab-$2.log | grep -v "^--"
