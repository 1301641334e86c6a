//! `choreo-courier`: the courier service binary; everything else is in the
//! library and `choreo_bus::serve`.

fn main() -> anyhow::Result<()> {
    choreo_bus::serve::<choreo_courier::handlers::CourierHandler>()
        .map_err(anyhow::Error::from_boxed)
}
