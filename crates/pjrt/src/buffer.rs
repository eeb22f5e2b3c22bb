//! Device buffers (`PJRT_Buffer`): made from host data, read back to the host, destroyed on drop.

use crate::client::{Client, ClientInner, Device, Event};
use crate::element::{as_bytes, Element, ElementType};
use crate::error::{destroy, PjrtError, Result};
use crate::ffi;
use crate::plugin::pjrt_call;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// An array on a device. Keeps its client alive. `Send` and `Sync` (PJRT buffers are thread-safe).
pub struct Buffer {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) ptr: *mut ffi::PJRT_Buffer,
    dims: Vec<i64>,
    element_type: ElementType,
}

// SAFETY: PJRT buffers may be used and freed from any thread by the C API's contract.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Takes ownership of a buffer the plugin returned, reading its (immutable) type and shape.
    pub(crate) fn adopt(client: &Arc<ClientInner>, ptr: *mut ffi::PJRT_Buffer) -> Result<Buffer> {
        if ptr.is_null() {
            return Err(PjrtError::Invalid("the PJRT plugin returned a null buffer".into()));
        }
        client.counters.buffers.fetch_add(1, Ordering::SeqCst);
        // Owned from here: an error below drops `buffer`, which destroys it.
        let mut buffer = Buffer { client: client.clone(), ptr, dims: Vec::new(), element_type: ElementType::Other(0) };
        buffer.dims = buffer.read_dims()?;
        buffer.element_type = buffer.read_element_type()?;
        Ok(buffer)
    }

    /// The array's dimensions.
    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    /// The element type.
    pub fn element_type(&self) -> ElementType {
        self.element_type
    }

    fn read_dims(&self) -> Result<Vec<i64>> {
        let mut args = ffi::PJRT_Buffer_Dimensions_Args::new();
        args.buffer = self.ptr;
        pjrt_call!(&self.client.plugin, PJRT_Buffer_Dimensions, &mut args)?;
        if args.dims.is_null() || args.num_dims == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: `num_dims` values owned by the buffer, copied here.
        Ok(unsafe { std::slice::from_raw_parts(args.dims, args.num_dims) }.to_vec())
    }

    fn read_element_type(&self) -> Result<ElementType> {
        let mut args = ffi::PJRT_Buffer_ElementType_Args::new();
        args.buffer = self.ptr;
        pjrt_call!(&self.client.plugin, PJRT_Buffer_ElementType, &mut args)?;
        Ok(ElementType::from_raw(args.element_type))
    }

    /// The elements, dense and row-major, as raw bytes (`PJRT_Buffer_ToHostBuffer`, awaited).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; self.host_size()?];
        self.copy_to_host(bytes.as_mut_ptr().cast(), bytes.len())?;
        Ok(bytes)
    }

    /// The elements as `T`, which must be the buffer's element type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let ty = self.element_type;
        if ty != T::TYPE {
            return Err(PjrtError::Invalid(format!("the buffer holds {ty}, not {}", T::TYPE)));
        }
        let size = self.host_size()?;
        let elem = std::mem::size_of::<T>();
        if size % elem != 0 {
            return Err(PjrtError::Invalid(format!("the buffer's host size {size} is not a multiple of {elem}")));
        }
        let mut values = vec![T::default(); size / elem];
        // Written in place: `T` is plain data, so any bytes the plugin writes are valid values.
        self.copy_to_host(values.as_mut_ptr().cast(), size)?;
        Ok(values)
    }

    /// The bytes the dense host copy takes, as the plugin reports it (a `ToHostBuffer` size query).
    fn host_size(&self) -> Result<usize> {
        let mut args = ffi::PJRT_Buffer_ToHostBuffer_Args::new();
        args.src = self.ptr;
        pjrt_call!(&self.client.plugin, PJRT_Buffer_ToHostBuffer, &mut args)?;
        // A query makes no event, but a plugin that returns one anyway has it destroyed.
        drop(Event::adopt(&self.client, args.event));
        Ok(args.dst_size)
    }

    fn copy_to_host(&self, dst: *mut std::ffi::c_void, size: usize) -> Result<()> {
        let mut args = ffi::PJRT_Buffer_ToHostBuffer_Args::new();
        args.src = self.ptr;
        args.dst = dst;
        args.dst_size = size;
        pjrt_call!(&self.client.plugin, PJRT_Buffer_ToHostBuffer, &mut args)?;
        // The copy is asynchronous: `dst` must not be used (or freed) before the event is ready.
        match Event::adopt(&self.client, args.event) {
            Some(event) => event.wait(),
            None => Ok(()),
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let api = self.client.plugin.api();
        if let Some(f) = api.PJRT_Buffer_Destroy {
            let mut args = ffi::PJRT_Buffer_Destroy_Args::new();
            args.buffer = self.ptr;
            // SAFETY: the buffer is owned here and destroyed once; an error from it is freed.
            unsafe { destroy(api, f(&mut args)) };
        }
        self.client.counters.buffers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer").field("dims", &self.dims).field("type", &self.element_type).finish()
    }
}

impl Client {
    /// Copies host data with dimensions `dims` (row-major) to the client's first device.
    pub fn buffer_from_host<T: Element>(&self, data: &[T], dims: &[i64]) -> Result<Buffer> {
        self.buffer_from_bytes(T::TYPE, as_bytes(data), dims, None)
    }

    /// Copies raw host bytes of `element_type` with dimensions `dims` (dense, row-major) to `device`
    /// (the first device if `None`). The byte length must match the dimensions exactly.
    pub fn buffer_from_bytes(
        &self,
        element_type: ElementType,
        bytes: &[u8],
        dims: &[i64],
        device: Option<&Device>,
    ) -> Result<Buffer> {
        let elem = element_type
            .size_in_bytes()
            .ok_or_else(|| PjrtError::Invalid(format!("no host representation for element type {element_type}")))?;
        let count = dims.iter().try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)));
        let expected = count
            .and_then(|n| n.checked_mul(elem))
            .ok_or_else(|| PjrtError::Invalid(format!("dimensions {dims:?} are negative or too large for a buffer")))?;
        if bytes.len() != expected {
            return Err(PjrtError::Invalid(format!(
                "{} bytes given for a {element_type} array of dimensions {dims:?}, which takes {expected}",
                bytes.len()
            )));
        }
        let device = match device {
            Some(d) if !self.same_client(&d.client) => {
                return Err(PjrtError::Invalid("the device belongs to another PJRT client".into()))
            }
            Some(d) => self.inner.devices[d.index].ptr,
            None => self.inner.devices[0].ptr,
        };
        let mut args = ffi::PJRT_Client_BufferFromHostBuffer_Args::new();
        args.client = self.inner.ptr;
        args.data = bytes.as_ptr().cast();
        args.element_type = element_type.to_raw();
        args.dims = dims.as_ptr();
        args.num_dims = dims.len();
        args.host_buffer_semantics = ffi::HOST_BUFFER_IMMUTABLE_ONLY_DURING_CALL;
        args.device = device;
        pjrt_call!(&self.inner.plugin, PJRT_Client_BufferFromHostBuffer, &mut args)?;
        let done = Event::adopt(&self.inner, args.done_with_host_buffer);
        let buffer = Buffer::adopt(&self.inner, args.buffer)?;
        // The semantics promise the data is copied during the call; waiting costs nothing then and
        // keeps `bytes` borrowed until the plugin says it is done with them even if it is not.
        if let Some(done) = done {
            done.wait()?;
        }
        Ok(buffer)
    }
}
