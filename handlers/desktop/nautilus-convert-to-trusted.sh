#!/bin/sh
# Nautilus script "Convert to Trusted PDF/PNG" (installed by odyssey-integrate --user).
# X-Odyssey=true
exec @ODYSSEY_OPEN@ --convert "$@"
