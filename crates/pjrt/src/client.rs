//! The client (`PJRT_Client`): one per plugin and use, owning its devices; buffers and executables
//! made from it keep it alive. Also the two objects that exist only inside a call: events and the
//! executable view used to read a compiled program's metadata.

use crate::error::{destroy, PjrtError, Result};
use crate::ffi;
use crate::plugin::{c_str, pjrt_call, Plugin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// PJRT objects alive for one client, counted by the wrappers (creation and destruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveObjects {
    /// Device buffers ([`Buffer`](crate::Buffer)) not yet dropped.
    pub buffers: usize,
    /// Loaded executables not yet dropped, plus the short-lived `PJRT_Executable` views taken to
    /// read a program's metadata (those exist only inside a call).
    pub executables: usize,
    /// `PJRT_Event`s not yet destroyed; 0 except while a call waits on one.
    pub events: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub buffers: AtomicUsize,
    pub executables: AtomicUsize,
    pub events: AtomicUsize,
}

pub(crate) struct ClientInner {
    pub plugin: Arc<Plugin>,
    pub ptr: *mut ffi::PJRT_Client,
    pub devices: Vec<DeviceInfo>,
    pub counters: Counters,
}

// SAFETY: a PJRT client is thread-safe by the C API's contract (every entry point may be called
// concurrently); the pointer is only freed in Drop, when no other handle holds the client.
unsafe impl Send for ClientInner {}
unsafe impl Sync for ClientInner {}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Client_Destroy_Args::new();
        args.client = self.ptr;
        if let Err(e) = pjrt_call!(&self.plugin, PJRT_Client_Destroy, &mut args) {
            // A destructor cannot return it; the plugin's error object has been freed by now.
            eprintln!("accelrt-pjrt: {e}");
        }
    }
}

/// A device's pointer (owned by its client) and what it says about itself.
#[derive(Clone)]
pub(crate) struct DeviceInfo {
    pub ptr: *mut ffi::PJRT_Device,
    pub id: i32,
    pub kind: String,
    pub description: String,
}

/// A device of a client, as the plugin describes it.
#[derive(Clone)]
pub struct Device {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) index: usize,
}

impl Device {
    fn info(&self) -> &DeviceInfo {
        &self.client.devices[self.index]
    }

    /// The plugin's device id (`PJRT_DeviceDescription_Id`).
    pub fn id(&self) -> i32 {
        self.info().id
    }

    /// The kind of device, e.g. `cpu` (`PJRT_DeviceDescription_Kind`).
    pub fn kind(&self) -> &str {
        &self.info().kind
    }

    /// A short description, e.g. `CpuDevice(id=0)` (`PJRT_DeviceDescription_ToString`).
    pub fn description(&self) -> &str {
        &self.info().description
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("id", &self.id()).field("kind", &self.kind()).finish()
    }
}

/// A PJRT client: compiles programs and holds buffers on the plugin's devices.
///
/// Cheap to clone (shared); `Send` and `Sync`, since the C API requires clients, buffers and
/// executables to be usable from any thread.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
    platform_name: String,
    platform_version: String,
}

impl Client {
    /// Creates a client of `plugin` with no platform options (`PJRT_Client_Create`).
    ///
    /// # Errors
    /// [`PjrtError::Plugin`] if a call fails, [`PjrtError::Invalid`] if the plugin returns no
    /// client or a client without addressable devices.
    pub fn new(plugin: &Arc<Plugin>) -> Result<Client> {
        let mut args = ffi::PJRT_Client_Create_Args::new();
        pjrt_call!(plugin, PJRT_Client_Create, &mut args)?;
        if args.client.is_null() {
            return Err(PjrtError::Invalid("PJRT_Client_Create succeeded but returned no client".into()));
        }
        // From here on the client is destroyed on every path, by ClientInner's Drop.
        let mut inner = ClientInner {
            plugin: plugin.clone(),
            ptr: args.client,
            devices: Vec::new(),
            counters: Counters::default(),
        };
        inner.devices = read_devices(&inner)?;
        let platform_name = {
            let mut a = ffi::PJRT_Client_PlatformName_Args::new();
            a.client = inner.ptr;
            pjrt_call!(plugin, PJRT_Client_PlatformName, &mut a)?;
            // SAFETY: a string owned by the client, copied here.
            unsafe { c_str(a.platform_name, a.platform_name_size) }
        };
        let platform_version = {
            let mut a = ffi::PJRT_Client_PlatformVersion_Args::new();
            a.client = inner.ptr;
            pjrt_call!(plugin, PJRT_Client_PlatformVersion, &mut a)?;
            // SAFETY: as above.
            unsafe { c_str(a.platform_version, a.platform_version_size) }
        };
        Ok(Client { inner: Arc::new(inner), platform_name, platform_version })
    }

    /// The plugin this client belongs to.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.inner.plugin
    }

    /// The platform, e.g. `cpu` (`PJRT_Client_PlatformName`).
    pub fn platform_name(&self) -> &str {
        &self.platform_name
    }

    /// The platform's version text (`PJRT_Client_PlatformVersion`).
    pub fn platform_version(&self) -> &str {
        &self.platform_version
    }

    /// The devices this client can use (`PJRT_Client_AddressableDevices`), in the plugin's order.
    pub fn devices(&self) -> Vec<Device> {
        (0..self.inner.devices.len()).map(|index| Device { client: self.inner.clone(), index }).collect()
    }

    /// PJRT objects of this client alive now (buffers, executables, events), for leak checks.
    pub fn live_objects(&self) -> LiveObjects {
        let c = &self.inner.counters;
        LiveObjects {
            buffers: c.buffers.load(Ordering::SeqCst),
            executables: c.executables.load(Ordering::SeqCst),
            events: c.events.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn same_client(&self, other: &Arc<ClientInner>) -> bool {
        Arc::ptr_eq(&self.inner, other)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("platform", &self.platform_name)
            .field("version", &self.platform_version)
            .field("devices", &self.inner.devices.len())
            .finish()
    }
}

fn read_devices(client: &ClientInner) -> Result<Vec<DeviceInfo>> {
    let plugin = &client.plugin;
    let mut args = ffi::PJRT_Client_AddressableDevices_Args::new();
    args.client = client.ptr;
    pjrt_call!(plugin, PJRT_Client_AddressableDevices, &mut args)?;
    let ptrs = if args.addressable_devices.is_null() {
        &[][..]
    } else {
        // SAFETY: `num_addressable_devices` pointers owned by the client.
        unsafe { std::slice::from_raw_parts(args.addressable_devices, args.num_addressable_devices) }
    };
    let mut devices = Vec::with_capacity(ptrs.len());
    for &ptr in ptrs {
        let mut d = ffi::PJRT_Device_GetDescription_Args::new();
        d.device = ptr;
        pjrt_call!(plugin, PJRT_Device_GetDescription, &mut d)?;
        let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
        id.device_description = d.device_description;
        pjrt_call!(plugin, PJRT_DeviceDescription_Id, &mut id)?;
        let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
        kind.device_description = d.device_description;
        pjrt_call!(plugin, PJRT_DeviceDescription_Kind, &mut kind)?;
        let mut text = ffi::PJRT_DeviceDescription_ToString_Args::new();
        text.device_description = d.device_description;
        pjrt_call!(plugin, PJRT_DeviceDescription_ToString, &mut text)?;
        // SAFETY: strings owned by the device, copied here.
        let (kind, description) =
            unsafe { (c_str(kind.device_kind, kind.device_kind_size), c_str(text.to_string, text.to_string_size)) };
        devices.push(DeviceInfo { ptr, id: id.id, kind, description });
    }
    if devices.is_empty() {
        return Err(PjrtError::Invalid("the PJRT client has no addressable devices".into()));
    }
    Ok(devices)
}

/// A `PJRT_Event` returned by a call, destroyed when dropped (awaited or not).
pub(crate) struct Event<'a> {
    client: &'a ClientInner,
    ptr: *mut ffi::PJRT_Event,
}

impl<'a> Event<'a> {
    /// Takes ownership of an event the plugin returned; `None` for a null pointer.
    pub fn adopt(client: &'a ClientInner, ptr: *mut ffi::PJRT_Event) -> Option<Event<'a>> {
        if ptr.is_null() {
            return None;
        }
        client.counters.events.fetch_add(1, Ordering::SeqCst);
        Some(Event { client, ptr })
    }

    /// Blocks until the event is ready; its error status becomes a typed error.
    pub fn wait(self) -> Result<()> {
        let mut args = ffi::PJRT_Event_Await_Args::new();
        args.event = self.ptr;
        pjrt_call!(&self.client.plugin, PJRT_Event_Await, &mut args)
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Event_Destroy_Args::new();
        args.event = self.ptr;
        if let Some(f) = self.client.plugin.api().PJRT_Event_Destroy {
            // SAFETY: the event is owned here and destroyed once; an error from it is freed.
            unsafe { destroy(self.client.plugin.api(), f(&mut args)) };
        }
        self.client.counters.events.fetch_sub(1, Ordering::SeqCst);
    }
}
