//! choreo-communication service.
