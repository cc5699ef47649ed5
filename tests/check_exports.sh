#!/bin/sh
# Fails if the shared library exports a symbol that does not start with cnf_.
lib="$1"
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^cnf_' | grep -v '^_' )
if [ -n "$bad" ]; then
  echo "symbols exported without the cnf_ prefix:"; echo "$bad"; exit 1
fi
n=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -c '^cnf_')
echo "$n cnf_ symbols exported, no others"
