//! choreo-order service.
