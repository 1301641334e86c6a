//! `choreo-inventory`: the inventory service binary; everything else is in the
//! library and `choreo_bus::serve`.

fn main() -> anyhow::Result<()> {
    choreo_bus::serve::<choreo_inventory::handlers::InventoryHandler>()
        .map_err(anyhow::Error::from_boxed)
}
