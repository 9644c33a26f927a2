#!/bin/sh
# Nautilus script "@TITLE@" (installed by odyssey-integrate --user into
# ~/.local/share/nautilus/scripts/; one template serves every Odyssey action).
# X-Odyssey=true
# In a local folder Nautilus passes the selected names as arguments (relative to the folder,
# its working directory); elsewhere none, and only NAUTILUS_SCRIPT_SELECTED_FILE_PATHS (full
# paths, one a line, local files) or NAUTILUS_SCRIPT_SELECTED_URIS (one a line) say what was
# selected: odyssey-open takes paths and URIs alike.
if [ "$#" -eq 0 ]; then
  sel=${NAUTILUS_SCRIPT_SELECTED_FILE_PATHS:-${NAUTILUS_SCRIPT_SELECTED_URIS:-}}
  [ -n "$sel" ] || { echo "odyssey: nothing selected" >&2; exit 2; }
  set -f
  IFS='
'
  # shellcheck disable=SC2086 # one argument per line, no globbing
  set -- $sel
fi
exec @ODYSSEY_OPEN@ @ACTION@ -- "$@"
