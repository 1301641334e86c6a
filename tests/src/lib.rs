//! End-to-end tests of the choreo stack; the tests live in tests/tests/.
