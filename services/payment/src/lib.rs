//! choreo-payment service.
