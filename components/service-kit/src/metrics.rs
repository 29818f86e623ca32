//! Registering a component's metrics with the registry its `/metrics` endpoint serves.

/// Registers metric handles with a [`prometheus_client::registry::Registry`], given as one
/// `(name, help, handle)` per metric after the registry:
///
/// ```
/// # use prometheus_client::{metrics::counter::Counter, registry::Registry};
/// let (mut registry, served) = (Registry::default(), Counter::<u64>::default());
/// service_kit::register_metrics!(&mut registry, ("example_served", "Requests served", served));
/// ```
///
/// The registry gets a clone of each handle, which shares its value with the original (handles
/// are reference-counted), so the component keeps counting on the handles it holds.
#[macro_export]
macro_rules! register_metrics {
    ($registry:expr, $(($name:expr, $help:expr, $metric:expr $(,)?)),+ $(,)?) => {{
        let registry = &mut *$registry;
        $(registry.register($name, $help, ::std::clone::Clone::clone(&$metric));)+
    }};
}
