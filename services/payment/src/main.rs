//! `choreo-payment`: the payment service binary; everything else is in the
//! library and `choreo_bus::serve`.

fn main() -> anyhow::Result<()> {
    choreo_bus::serve::<choreo_payment::handlers::PaymentHandler>()
        .map_err(anyhow::Error::from_boxed)
}
