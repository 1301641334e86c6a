//! The saga's happy path as events, for tools that count what one saga
//! costs; with [`CONSUMERS`](crate::CONSUMERS), everything here is derived,
//! never counted by hand.

use crate::{
    CustomerNotified, Event, OrderConfirmed, OrderPlaced, PaymentCompleted, PlaceOrder,
    ShipmentManifested, StockReserved, Topic, CONSUMERS,
};

/// The events one confirmed order causes, in saga order, with their topics.
pub const HAPPY_PATH: [(&str, Topic); 7] = [
    (PlaceOrder::EVENT_TYPE, PlaceOrder::TOPIC),
    (OrderPlaced::EVENT_TYPE, OrderPlaced::TOPIC),
    (StockReserved::EVENT_TYPE, StockReserved::TOPIC),
    (ShipmentManifested::EVENT_TYPE, ShipmentManifested::TOPIC),
    (PaymentCompleted::EVENT_TYPE, PaymentCompleted::TOPIC),
    (OrderConfirmed::EVENT_TYPE, OrderConfirmed::TOPIC),
    (CustomerNotified::EVENT_TYPE, CustomerNotified::TOPIC),
];

/// How many services' consumer groups read `topic`.
pub fn consumer_count(topic: Topic) -> usize {
    CONSUMERS
        .iter()
        .filter(|(_, topics)| topics.contains(&topic.name()))
        .count()
}

/// Deliveries (one event received by one service) one confirmed order
/// causes: each happy-path event once per group reading its topic.
pub fn deliveries_per_saga() -> u64 {
    HAPPY_PATH
        .iter()
        .map(|(_, topic)| consumer_count(*topic) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_order_is_sixteen_deliveries() {
        // PlaceOrder 1 (order), OrderPlaced 4 (inventory, courier, payment,
        // communication), StockReserved 2 (order, courier),
        // ShipmentManifested 3 (order, inventory, payment), PaymentCompleted
        // 2 (order, courier), OrderConfirmed 4, CustomerNotified 0.
        let per_event: Vec<usize> = HAPPY_PATH.iter().map(|(_, t)| consumer_count(*t)).collect();
        assert_eq!(per_event, [1, 4, 2, 3, 2, 4, 0]);
        assert_eq!(deliveries_per_saga(), 16);
    }
}
