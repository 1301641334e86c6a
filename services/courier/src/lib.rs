//! choreo-courier service.
