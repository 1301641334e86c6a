//! choreo-inventory service.
