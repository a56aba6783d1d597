
# Appended by ffi/generate.sh (and ffi/tests/python.rs) to the generated module: before the
# interpreter finalizes, stop the clients' event threads from calling into Python (a call
# into a finalizing interpreter can abort the process). Events not handed to a listener
# are not confirmed: they come again when the app next starts.
import atexit as _tern_atexit

_tern_atexit.register(shutdown)
