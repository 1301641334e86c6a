//! Reason codes carried in `reason` fields.
//!
//! They are strings, not Avro enums, because adding a symbol to an Avro
//! enum breaks older readers; consumers must tolerate codes they do not
//! know.

/// Inventory could not reserve every line (`StockReservationFailed`,
/// `OrderCancelled`).
pub const OUT_OF_STOCK: &str = "OUT_OF_STOCK";
/// No courier serves the destination (`OrderCancelled`).
pub const SHIPPING_UNAVAILABLE: &str = "SHIPPING_UNAVAILABLE";
/// The payment failed (`OrderCancelled`, and the compensations it causes).
pub const PAYMENT_DECLINED: &str = "PAYMENT_DECLINED";
/// The order's deadline expired (`OrderCancelled`).
pub const TIMEOUT: &str = "TIMEOUT";
/// The customer cancelled the pending order (`OrderCancelled`).
pub const CUSTOMER_CANCELLED: &str = "CUSTOMER_CANCELLED";
/// No route to the destination country (`ShipmentManifestFailed`).
pub const NO_ROUTE: &str = "NO_ROUTE";
/// Balance below the amount (`PaymentFailed`).
pub const INSUFFICIENT_FUNDS: &str = "INSUFFICIENT_FUNDS";
/// The customer may not be charged (`PaymentFailed`).
pub const CUSTOMER_BLOCKED: &str = "CUSTOMER_BLOCKED";

/// The event carried data outside the [field contract](crate::contract)
/// (`PaymentFailed`, `StockReservationFailed`, `ShipmentManifestFailed`):
/// the participant cannot act on it, so it fails its step at once and the
/// saga compensates instead of waiting for the deadline.
pub const INVALID_DATA: &str = "INVALID_DATA";

/// Every reason `OrderCancelled` is emitted with today.
pub const ORDER_CANCELLED_REASONS: [&str; 5] = [
    OUT_OF_STOCK,
    SHIPPING_UNAVAILABLE,
    PAYMENT_DECLINED,
    TIMEOUT,
    CUSTOMER_CANCELLED,
];

/// Message templates named in `CustomerNotified.template`; also
/// re-exported as `choreo_events::templates`.
pub mod templates {
    /// Sent once per confirmed order.
    pub const ORDER_CONFIRMED: &str = "ORDER_CONFIRMED";
    /// Sent once per cancelled order.
    pub const ORDER_CANCELLED: &str = "ORDER_CANCELLED";

    /// Every template.
    pub const ALL: [&str; 2] = [ORDER_CONFIRMED, ORDER_CANCELLED];
}
