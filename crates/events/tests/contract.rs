//! Contract tests: the `.avsc` files, the Rust types and the catalogue must
//! agree, and every schema must carry real data through Avro binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{AvroSchema, Schema};
use choreo_events::*;
use serde_json::{json, Value as JsonValue};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn meta(order_id: &str, producer: &str) -> EventMetadata {
    EventMetadata::new(order_id, producer, None).with_causation_id(uuid::Uuid::new_v4().to_string())
}

fn lines() -> Vec<OrderLine> {
    vec![
        OrderLine {
            sku: "SKU-1".into(),
            quantity: 2,
            unit_price_minor: 1999,
        },
        OrderLine {
            sku: "SKU-2".into(),
            quantity: 1,
            unit_price_minor: i64::MAX,
        },
    ]
}

fn address() -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "Hauptstraße 1".into(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
    }
}

/// Everything checked per type; returns the full name it covered.
fn check<T: Event + AvroSchema + PartialEq>(sample: T) -> &'static str {
    let name = T::full_name();
    let parsed = T::schema();

    // Type and file agree in Parsing Canonical Form ...
    assert_eq!(
        T::get_schema().canonical_form(),
        parsed.canonical_form(),
        "{name}: Rust type and .avsc differ"
    );
    // ... and also in what canonical form strips but evolution and the
    // wire depend on: logical types and field defaults.
    assert_eq!(
        without_docs(serde_json::to_value(T::get_schema()).unwrap()),
        without_docs(serde_json::to_value(parsed).unwrap()),
        "{name}: Rust type and .avsc differ in logical types or defaults"
    );
    assert_eq!(
        parsed.name().map(|n| n.fullname(None)).as_deref(),
        Some(name)
    );
    assert_eq!(T::subject(), format!("{}-{name}", T::TOPIC.name()));

    // Avro binary round trip through the generic path the bus uses.
    let any = sample.clone().into_any();
    let value = any.to_avro_value().unwrap();
    let bytes = encode(parsed, value);
    let decoded = GenericDatumReader::builder(parsed)
        .build()
        .unwrap()
        .read_value(&mut bytes.as_slice())
        .unwrap();
    let back = AnyEvent::from_avro_value(name, decoded).unwrap();
    assert_eq!(back, any, "{name}: Avro round trip changed the event");
    // The same through the crate's datum helpers.
    assert_eq!(any.to_avro_datum().unwrap(), bytes);
    assert_eq!(AnyEvent::from_avro_datum(parsed, &bytes).unwrap(), any);
    assert_eq!(back.event_type(), T::EVENT_TYPE);
    assert_eq!(back.topic(), T::TOPIC);
    assert_eq!(back.metadata(), sample.metadata());

    // JSON round trip, as the CLI prints and re-encodes events.
    let json = any.to_json();
    assert_eq!(
        AnyEvent::from_json(T::EVENT_TYPE, json.clone()).unwrap(),
        any
    );
    assert_eq!(AnyEvent::from_json(name, json).unwrap(), any);
    name
}

fn encode(schema: &Schema, value: AvroValue) -> Vec<u8> {
    GenericDatumWriter::builder(schema)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap()
}

fn without_docs(mut json: JsonValue) -> JsonValue {
    fn strip(json: &mut JsonValue) {
        match json {
            JsonValue::Object(map) => {
                map.remove("doc");
                map.values_mut().for_each(strip);
            }
            JsonValue::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut json);
    json
}

#[test]
fn every_schema_matches_its_rust_type_and_round_trips() {
    let m = |producer| meta("order-1", producer);
    let covered: BTreeSet<&str> = [
        check(OrderPlaced {
            metadata: m("order"),
            customer_id: "c-1".into(),
            customer_email: "ada@example.com".into(),
            items: lines(),
            total_minor: 3998,
            currency: "EUR".into(),
            shipping_address: address(),
        }),
        check(OrderConfirmed {
            metadata: m("order"),
            total_minor: 3998,
            currency: "EUR".into(),
        }),
        check(OrderCancelled {
            metadata: m("order"),
            reason: reasons::PAYMENT_DECLINED.into(),
            detail: Some("card declined".into()),
        }),
        check(StockReserved {
            metadata: m("inventory"),
            items: lines(),
            customer_id: "c-1".into(),
            customer_email: "ada@example.com".into(),
            total_minor: 3998,
            currency: "EUR".into(),
            shipping_address: address(),
        }),
        check(StockReservationFailed {
            metadata: m("inventory"),
            reason: reasons::OUT_OF_STOCK.into(),
            missing_skus: vec!["SKU-1".into(), "SKU-2".into()],
        }),
        check(StockReleased {
            metadata: m("inventory"),
            reason: reasons::SHIPPING_UNAVAILABLE.into(),
            items: lines(),
        }),
        check(ShipmentManifested {
            metadata: m("courier"),
            shipment_id: "s-1".into(),
            carrier: "DHL".into(),
            tracking_number: "JJD000390007".into(),
            customer_id: "c-1".into(),
            amount_minor: 3998,
            currency: "EUR".into(),
        }),
        check(ShipmentManifestFailed {
            metadata: m("courier"),
            reason: reasons::NO_ROUTE.into(),
        }),
        check(ShipmentCancelled {
            metadata: m("courier"),
            shipment_id: "s-1".into(),
            reason: reasons::PAYMENT_DECLINED.into(),
        }),
        check(PaymentCompleted {
            metadata: m("payment"),
            payment_id: "p-1".into(),
            customer_id: "c-1".into(),
            amount_minor: 3998,
            currency: "EUR".into(),
        }),
        check(PaymentFailed {
            metadata: m("payment"),
            reason: reasons::INSUFFICIENT_FUNDS.into(),
        }),
        check(PaymentRefunded {
            metadata: m("payment"),
            payment_id: "p-1".into(),
            customer_id: "c-1".into(),
            amount_minor: 3998,
            currency: "EUR".into(),
            reason: reasons::TIMEOUT.into(),
        }),
        check(CustomerNotified {
            metadata: m("communication"),
            template: templates::ORDER_CONFIRMED.into(),
            recipient: "ada@example.com".into(),
            message_id: "<m-1@choreo>".into(),
        }),
        check(PlaceOrder {
            metadata: EventMetadata::new("order-1", INGRESS_PRODUCER, None),
            request_id: Some("req-1".into()),
            customer_id: "c-1".into(),
            customer_email: "ada@example.com".into(),
            items: lines(),
            currency: "EUR".into(),
            shipping_address: address(),
        }),
        check(CancelOrder {
            metadata: EventMetadata::new("order-1", INGRESS_PRODUCER, None),
            reason: None,
        }),
    ]
    .into_iter()
    .collect();

    let catalogued: BTreeSet<&str> = catalogue().iter().map(|e| e.full_name).collect();
    assert_eq!(
        covered, catalogued,
        "every catalogue entry needs a sample here"
    );
}

#[test]
fn catalogue_has_exactly_one_entry_per_schema_file() {
    let mut files = BTreeMap::new();
    for dir in std::fs::read_dir(schemas_dir()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|ext| ext == "avsc") {
                let relative = file.strip_prefix(schemas_dir()).unwrap().to_owned();
                files.insert(relative, std::fs::read_to_string(&file).unwrap());
            }
        }
    }
    assert!(
        !files.is_empty(),
        "no .avsc under {}",
        schemas_dir().display()
    );

    let mut seen_types = BTreeSet::new();
    let mut seen_subjects = BTreeSet::new();
    for entry in catalogue() {
        let path = PathBuf::from(entry.topic.name()).join(format!("{}.avsc", entry.event_type));
        let on_disk = files
            .remove(&path)
            .unwrap_or_else(|| panic!("{}: no file schemas/{}", entry.full_name, path.display()));
        assert_eq!(
            entry.avsc, on_disk,
            "{}: compiled-in schema is stale",
            entry.full_name
        );
        assert!(
            seen_types.insert(entry.event_type),
            "duplicate {}",
            entry.event_type
        );

        let subject = entry.subject();
        assert_eq!(
            subject,
            format!("{}-{}", entry.topic.name(), entry.full_name)
        );
        assert!(entry.full_name.starts_with("io.choreo."));
        assert!(entry.full_name.ends_with(&format!(".{}", entry.event_type)));
        assert!(seen_subjects.insert(subject));
        assert_eq!(
            SchemaEntry::by_full_name(entry.full_name).map(|e| e.event_type),
            Some(entry.event_type)
        );
    }
    assert!(
        files.is_empty(),
        "schema files missing from the catalogue: {:?}",
        files.keys()
    );
    for topic in Topic::ALL {
        assert!(
            SchemaEntry::of_topic(topic).next().is_some(),
            "{topic} has no schema"
        );
    }
}

/// Walks every record definition of an `.avsc` (as JSON).
fn records(json: &JsonValue, out: &mut Vec<JsonValue>) {
    match json {
        JsonValue::Object(map) => {
            if map.get("type") == Some(&json!("record")) {
                out.push(json.clone());
            }
            map.values().for_each(|v| records(v, out));
        }
        JsonValue::Array(items) => items.iter().for_each(|v| records(v, out)),
        _ => {}
    }
}

fn full_name_of(record: &JsonValue) -> String {
    let name = record["name"].as_str().unwrap();
    match record["namespace"].as_str() {
        Some(ns) if !name.contains('.') => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

#[test]
fn schema_files_are_documented_and_share_identical_common_types() {
    let mut common: BTreeMap<String, (String, JsonValue)> = BTreeMap::new();
    for entry in catalogue() {
        let json: JsonValue = serde_json::from_str(entry.avsc).unwrap();
        let first = &json["fields"][0];
        assert_eq!(
            first["name"], "metadata",
            "{}: first field",
            entry.full_name
        );
        assert_eq!(
            full_name_of(&first["type"]),
            "io.choreo.common.EventMetadata"
        );

        let mut found = Vec::new();
        records(&json, &mut found);
        for record in found {
            let name = full_name_of(&record);
            assert!(
                record["doc"].as_str().is_some_and(|d| !d.is_empty()),
                "{name} has no doc"
            );
            for field in record["fields"].as_array().unwrap() {
                assert!(
                    field["doc"].as_str().is_some_and(|d| !d.is_empty()),
                    "{}: field {name}.{} has no doc",
                    entry.full_name,
                    field["name"]
                );
            }
            if name.starts_with("io.choreo.common.") {
                match common.get(&name) {
                    Some((first_file, first_def)) => assert_eq!(
                        &record, first_def,
                        "{name} in {} differs from {first_file}",
                        entry.full_name
                    ),
                    None => {
                        common.insert(name, (entry.full_name.to_owned(), record));
                    }
                }
            }
        }
    }
    let names: Vec<&str> = common.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "io.choreo.common.Address",
            "io.choreo.common.EventMetadata",
            "io.choreo.common.OrderLine"
        ]
    );
}

fn order_placed() -> OrderPlaced {
    OrderPlaced {
        metadata: meta("order-1", "order"),
        customer_id: "c-1".into(),
        customer_email: "ada@example.com".into(),
        items: lines(),
        total_minor: 3998,
        currency: "EUR".into(),
        shipping_address: address(),
    }
}

/// Decodes `bytes` written with `writer` and reads the result as our type,
/// both through the value API and the datum helper.
fn decode_with(writer: &Schema, bytes: &[u8], full_name: &str) -> Result<AnyEvent> {
    let value = GenericDatumReader::builder(writer)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    let from_value = AnyEvent::from_avro_value(full_name, value)?;
    assert_eq!(AnyEvent::from_avro_datum(writer, bytes)?, from_value);
    Ok(from_value)
}

#[test]
fn fields_added_by_a_newer_writer_are_ignored() {
    // A later, BACKWARD-compatible OrderPlaced: a new top-level field and a
    // new field inside the shared OrderLine.
    let mut newer: JsonValue = serde_json::from_str(OrderPlaced::avsc()).unwrap();
    newer["fields"].as_array_mut().unwrap().push(json!({
        "name": "gift_note", "type": ["null", "string"], "default": null, "doc": "added later"
    }));
    let items = newer["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "items")
        .unwrap();
    items["type"]["items"]["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "discount_minor", "type": "long", "default": 0, "doc": "added later"
        }));
    let newer = Schema::parse(&newer).unwrap();

    let sample = order_placed();
    let AvroValue::Record(mut fields) = sample.to_avro_value().unwrap() else {
        panic!("a record encodes as a record");
    };
    for (name, value) in &mut fields {
        if name == "items" {
            let AvroValue::Array(lines) = value else {
                panic!("items is an array")
            };
            for line in lines {
                let AvroValue::Record(line) = line else {
                    panic!("a line is a record")
                };
                line.push(("discount_minor".into(), AvroValue::Long(100)));
            }
        }
    }
    fields.push((
        "gift_note".into(),
        AvroValue::Union(1, Box::new(AvroValue::String("happy birthday".into()))),
    ));
    let bytes = encode(&newer, AvroValue::Record(fields));

    let got = decode_with(&newer, &bytes, OrderPlaced::full_name()).unwrap();
    assert_eq!(got, sample.into_any());
}

#[test]
fn fields_an_older_writer_lacked_take_their_defaults() {
    // OrderCancelled before `detail` was added.
    let mut older: JsonValue = serde_json::from_str(OrderCancelled::avsc()).unwrap();
    older["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "detail");
    let older = Schema::parse(&older).unwrap();

    let metadata = meta("order-1", "order");
    let AvroValue::Record(mut fields) = OrderCancelled {
        metadata: metadata.clone(),
        reason: reasons::TIMEOUT.into(),
        detail: None,
    }
    .to_avro_value()
    .unwrap() else {
        panic!("a record encodes as a record");
    };
    fields.retain(|(name, _)| name != "detail");
    let bytes = encode(&older, AvroValue::Record(fields));

    let got = decode_with(&older, &bytes, OrderCancelled::full_name()).unwrap();
    let AnyEvent::Orders(OrdersEvent::OrderCancelled(cancelled)) = got else {
        panic!("expected OrderCancelled, got {got:?}");
    };
    assert_eq!(cancelled.metadata, metadata);
    assert_eq!(cancelled.reason, reasons::TIMEOUT);
    assert_eq!(cancelled.detail, None);
}

#[test]
fn unknown_or_mismatched_schemas_are_errors() {
    let value = order_placed().to_avro_value().unwrap();
    let err =
        AnyEvent::from_avro_value("io.choreo.orders.OrderShipped", value.clone()).unwrap_err();
    assert!(matches!(err, Error::UnknownSchema(ref n) if n == "io.choreo.orders.OrderShipped"));

    // An OrderPlaced value read as PaymentCompleted lacks required fields.
    let err = AnyEvent::from_avro_value(PaymentCompleted::full_name(), value).unwrap_err();
    assert!(
        matches!(err, Error::Avro { full_name, .. } if full_name == PaymentCompleted::full_name())
    );

    // A datum whose writer schema is not ours.
    let foreign = Schema::parse_str(
        r#"{"type":"record","name":"Foo","namespace":"com.example","fields":[]}"#,
    )
    .unwrap();
    let err = AnyEvent::from_avro_datum(&foreign, &[]).unwrap_err();
    assert!(err.to_string().contains("com.example.Foo"), "{err}");

    // Truncated bytes.
    let bytes = order_placed().into_any().to_avro_datum().unwrap();
    let err =
        AnyEvent::from_avro_datum(OrderPlaced::schema(), &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, Error::Avro { .. }), "{err}");
}

#[test]
fn encoding_enforces_the_uuid_logical_type() {
    let mut event = order_placed();
    event.metadata.event_id = "not-a-uuid".into();
    let err = event.into_any().to_avro_value().unwrap_err();
    assert!(
        err.to_string().contains("io.choreo.orders.OrderPlaced"),
        "{err}"
    );
}

#[test]
fn hand_written_json_gets_metadata_from_order_id() {
    let got = AnyEvent::from_json(
        "PaymentFailed",
        json!({"order_id": "o-7", "reason": reasons::CUSTOMER_BLOCKED}),
    )
    .unwrap();
    assert_eq!(got.order_id(), "o-7");
    assert_eq!(got.metadata().producer, HAND_WRITTEN_PRODUCER);
    assert_eq!(got.topic(), Topic::Payments);
    assert!(uuid::Uuid::parse_str(&got.metadata().event_id).is_ok());
    got.to_avro_value().unwrap();

    let err = AnyEvent::from_json("PaymentFailed", json!({"reason": "X"})).unwrap_err();
    assert!(
        err.to_string().contains("missing field `metadata`"),
        "{err}"
    );
    assert!(err.to_string().contains("order_id"), "{err}");

    let err =
        AnyEvent::from_json("PaymentFailed", json!({"order_id": "o", "reson": "X"})).unwrap_err();
    assert!(err.to_string().contains("unknown field `reson`"), "{err}");

    let err = AnyEvent::from_json("PaymentFailed", json!({"order_id": "o"})).unwrap_err();
    assert!(err.to_string().contains("missing field `reason`"), "{err}");

    let err = AnyEvent::from_json("PaymentExploded", json!({})).unwrap_err();
    assert!(matches!(err, Error::UnknownEventType(_)));
    assert!(err.to_string().contains("PaymentFailed"), "{err}");
}

#[test]
fn topic_enums_convert_to_and_from_any_event() {
    let any: AnyEvent = order_placed().into();
    assert_eq!(any.event_type(), "OrderPlaced");
    assert_eq!(any.full_name(), "io.choreo.orders.OrderPlaced");
    assert_eq!(any.subject(), "orders-io.choreo.orders.OrderPlaced");
    let orders = OrdersEvent::try_from(any.clone()).unwrap();
    assert_eq!(orders.event_type(), "OrderPlaced");
    assert_eq!(InventoryEvent::try_from(any.clone()), Err(any));
}
