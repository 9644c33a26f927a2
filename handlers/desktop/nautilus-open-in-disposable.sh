#!/bin/sh
# Nautilus script "Open in Disposable VM" (installed by odyssey-integrate --user into
# ~/.local/share/nautilus/scripts/). Nautilus passes the selected files as arguments.
# X-Odyssey=true
exec @ODYSSEY_OPEN@ --dispvm "$@"
