//! The subset of the PJRT C API that accelrt uses, declared by hand from the documented API
//! (`xla/pjrt/c/pjrt_c_api.h`, version [`API_MAJOR`].[`API_MINOR`]). No copy of the header is kept
//! here: a test (`layout_matches_plugin_header`) compiles a small C program against the header that
//! ships inside the fetched plugin wheel and compares every offset and size declared below.
//!
//! Names follow the header exactly, so a declaration can be checked against it by eye and by that
//! test. Every argument struct starts with `struct_size` (set to the header's `*_STRUCT_SIZE`: the
//! end of the last field, which is what the plugin uses to tell which fields a caller knows) and
//! `extension_start`.

#![allow(non_camel_case_types, non_snake_case, dead_code)]

use std::ffi::{c_char, c_int, c_void};

/// The API version these declarations were written for.
pub const API_MAJOR: i32 = 0;
/// See [`API_MAJOR`]. Newer minors only append fields and functions, so they are accepted.
pub const API_MINOR: i32 = 81;

/// Opaque objects owned by the plugin.
macro_rules! opaque {
    ($($name:ident),* $(,)?) => {
        $(
            #[repr(C)]
            pub struct $name {
                _private: [u8; 0],
            }
        )*
    };
}
opaque!(
    PJRT_Error,
    PJRT_Extension_Base,
    PJRT_Event,
    PJRT_Client,
    PJRT_Device,
    PJRT_DeviceDescription,
    PJRT_Memory,
    PJRT_Executable,
    PJRT_LoadedExecutable,
    PJRT_Buffer,
    PJRT_SerializedExecutable,
);

/// Every struct below, with its field names for the layout test.
pub trait CStruct: Sized {
    /// The header's `<name>_STRUCT_SIZE`: where the last field ends.
    const STRUCT_SIZE: usize;
    /// The struct's C name.
    const NAME: &'static str;
    /// (C field name, Rust offset) in declaration order.
    fn field_offsets() -> Vec<(&'static str, usize)>;
}

const fn max_end(ends: &[usize]) -> usize {
    let mut i = 0;
    let mut max = 0;
    while i < ends.len() {
        if ends[i] > max {
            max = ends[i];
        }
        i += 1;
    }
    max
}

/// Declares a `#[repr(C)]` struct and its [`CStruct`] table. A field written `rust_name as c_name`
/// has a different name in C (a Rust keyword, or the first member of an anonymous union).
macro_rules! c_struct {
    ($name:ident { $( $field:ident $(as $cname:ident)? : $ty:ty ),* $(,)? }) => {
        #[repr(C)]
        pub struct $name {
            $( pub $field: $ty, )*
        }
        impl CStruct for $name {
            const STRUCT_SIZE: usize =
                max_end(&[$( std::mem::offset_of!($name, $field) + std::mem::size_of::<$ty>() ),*]);
            const NAME: &'static str = stringify!($name);
            fn field_offsets() -> Vec<(&'static str, usize)> {
                vec![$( (c_struct!(@cname $field $($cname)?), std::mem::offset_of!($name, $field)) ),*]
            }
        }
    };
    (@cname $field:ident) => { stringify!($field) };
    (@cname $field:ident $cname:ident) => { stringify!($cname) };
}

/// Argument structs: zeroed, with `struct_size` set. Zero is a valid value for every field here
/// (null pointers, zero counts, `None` callbacks, `false`).
macro_rules! args_struct {
    ($name:ident { $( $field:ident $(as $cname:ident)? : $ty:ty ),* $(,)? }) => {
        c_struct!($name {
            struct_size: usize,
            extension_start: *mut PJRT_Extension_Base,
            $( $field $(as $cname)? : $ty ),*
        });
        impl $name {
            pub fn new() -> $name {
                // SAFETY: every field is a pointer, integer, bool or union of those; zero is valid.
                let mut args: $name = unsafe { std::mem::zeroed() };
                args.struct_size = <$name as CStruct>::STRUCT_SIZE;
                args
            }
        }
    };
}

// ------------------------------------------------------------------ enums (C `int`) -----------

pub type PJRT_Error_Code = c_int;
pub type PJRT_Buffer_Type = c_int;
pub type PJRT_NamedValue_Type = c_int;
pub type PJRT_HostBufferSemantics = c_int;

pub const NAMED_VALUE_STRING: PJRT_NamedValue_Type = 0;
pub const NAMED_VALUE_INT64: PJRT_NamedValue_Type = 1;
pub const NAMED_VALUE_INT64_LIST: PJRT_NamedValue_Type = 2;
pub const NAMED_VALUE_FLOAT: PJRT_NamedValue_Type = 3;
pub const NAMED_VALUE_BOOL: PJRT_NamedValue_Type = 4;

/// `PJRT_HostBufferSemantics_kImmutableOnlyDuringCall`: the plugin copies the host data before
/// the call returns, so the caller's slice need only live for the call.
pub const HOST_BUFFER_IMMUTABLE_ONLY_DURING_CALL: PJRT_HostBufferSemantics = 0;

// ------------------------------------------------------------------ structs -------------------

c_struct!(PJRT_Api_Version {
    struct_size: usize,
    extension_start: *mut PJRT_Extension_Base,
    major_version: c_int,
    minor_version: c_int,
});

args_struct!(PJRT_Error_Destroy_Args { error: *mut PJRT_Error });
args_struct!(PJRT_Error_Message_Args { error: *const PJRT_Error, message: *const c_char, message_size: usize });
args_struct!(PJRT_Error_GetCode_Args { error: *const PJRT_Error, code: PJRT_Error_Code });

/// The anonymous union of `PJRT_NamedValue`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union PJRT_NamedValue_Value {
    pub string_value: *const c_char,
    pub int64_value: i64,
    pub int64_array_value: *const i64,
    pub float_value: f32,
    pub bool_value: bool,
}

args_struct!(PJRT_NamedValue {
    name: *const c_char,
    name_size: usize,
    value_type as r#type: PJRT_NamedValue_Type,
    value as string_value: PJRT_NamedValue_Value,
    value_size: usize,
});

args_struct!(PJRT_Plugin_Initialize_Args {});
args_struct!(PJRT_Plugin_Attributes_Args { attributes: *const PJRT_NamedValue, num_attributes: usize });

args_struct!(PJRT_Event_Destroy_Args { event: *mut PJRT_Event });
args_struct!(PJRT_Event_Await_Args { event: *mut PJRT_Event });

args_struct!(PJRT_Client_Create_Args {
    create_options: *const PJRT_NamedValue,
    num_options: usize,
    kv_get_callback: *const c_void,
    kv_get_user_arg: *mut c_void,
    kv_put_callback: *const c_void,
    kv_put_user_arg: *mut c_void,
    client: *mut PJRT_Client,
    kv_try_get_callback: *const c_void,
    kv_try_get_user_arg: *mut c_void,
});
args_struct!(PJRT_Client_Destroy_Args { client: *mut PJRT_Client });
args_struct!(PJRT_Client_PlatformName_Args {
    client: *mut PJRT_Client,
    platform_name: *const c_char,
    platform_name_size: usize,
});
args_struct!(PJRT_Client_PlatformVersion_Args {
    client: *mut PJRT_Client,
    platform_version: *const c_char,
    platform_version_size: usize,
});
args_struct!(PJRT_Client_AddressableDevices_Args {
    client: *mut PJRT_Client,
    addressable_devices: *const *mut PJRT_Device,
    num_addressable_devices: usize,
});

args_struct!(PJRT_Program {
    code: *mut c_char,
    code_size: usize,
    format: *const c_char,
    format_size: usize,
});
args_struct!(PJRT_Client_Compile_Args {
    client: *mut PJRT_Client,
    program: *const PJRT_Program,
    compile_options: *const c_char,
    compile_options_size: usize,
    executable: *mut PJRT_LoadedExecutable,
});
args_struct!(PJRT_Client_BufferFromHostBuffer_Args {
    client: *mut PJRT_Client,
    data: *const c_void,
    element_type as r#type: PJRT_Buffer_Type,
    dims: *const i64,
    num_dims: usize,
    byte_strides: *const i64,
    num_byte_strides: usize,
    host_buffer_semantics: PJRT_HostBufferSemantics,
    device: *mut PJRT_Device,
    memory: *mut PJRT_Memory,
    device_layout: *mut c_void,
    done_with_host_buffer: *mut PJRT_Event,
    buffer: *mut PJRT_Buffer,
});

args_struct!(PJRT_DeviceDescription_Id_Args { device_description: *mut PJRT_DeviceDescription, id: c_int });
args_struct!(PJRT_DeviceDescription_Kind_Args {
    device_description: *mut PJRT_DeviceDescription,
    device_kind: *const c_char,
    device_kind_size: usize,
});
args_struct!(PJRT_DeviceDescription_ToString_Args {
    device_description: *mut PJRT_DeviceDescription,
    to_string: *const c_char,
    to_string_size: usize,
});
args_struct!(PJRT_Device_GetDescription_Args {
    device: *mut PJRT_Device,
    device_description: *mut PJRT_DeviceDescription,
});

args_struct!(PJRT_Executable_Destroy_Args { executable: *mut PJRT_Executable });
args_struct!(PJRT_Executable_Name_Args {
    executable: *mut PJRT_Executable,
    executable_name: *const c_char,
    executable_name_size: usize,
});
args_struct!(PJRT_Executable_NumOutputs_Args { executable: *mut PJRT_Executable, num_outputs: usize });
args_struct!(PJRT_Executable_Fingerprint_Args {
    executable: *mut PJRT_Executable,
    executable_fingerprint: *const c_char,
    executable_fingerprint_size: usize,
});
args_struct!(PJRT_Executable_OutputElementTypes_Args {
    executable: *mut PJRT_Executable,
    output_types: *mut PJRT_Buffer_Type,
    num_output_types: usize,
});
args_struct!(PJRT_Executable_OutputDimensions_Args {
    executable: *mut PJRT_Executable,
    num_outputs: usize,
    dims: *const i64,
    dim_sizes: *const usize,
});

args_struct!(PJRT_Executable_Serialize_Args {
    executable: *const PJRT_Executable,
    serialized_bytes: *const c_char,
    serialized_bytes_size: usize,
    serialized_executable: *mut PJRT_SerializedExecutable,
    serialized_executable_deleter: Option<unsafe extern "C" fn(*mut PJRT_SerializedExecutable)>,
});
args_struct!(PJRT_Executable_DeserializeAndLoad_Args {
    client: *mut PJRT_Client,
    serialized_executable: *const c_char,
    serialized_executable_size: usize,
    loaded_executable: *mut PJRT_LoadedExecutable,
    overridden_serialized_compile_options: *const c_char,
    overridden_serialized_compile_options_size: usize,
});

args_struct!(PJRT_LoadedExecutable_Destroy_Args { executable: *mut PJRT_LoadedExecutable });
args_struct!(PJRT_LoadedExecutable_GetExecutable_Args {
    loaded_executable: *mut PJRT_LoadedExecutable,
    executable: *mut PJRT_Executable,
});

args_struct!(PJRT_ExecuteOptions {
    send_callbacks: *mut *mut c_void,
    recv_callbacks: *mut *mut c_void,
    num_send_ops: usize,
    num_recv_ops: usize,
    launch_id: c_int,
    non_donatable_input_indices: *const i64,
    num_non_donatable_input_indices: usize,
    context: *mut c_void,
    call_location: *const c_char,
    num_tasks: usize,
    task_ids: *mut c_int,
    incarnation_ids: *mut i64,
});
args_struct!(PJRT_LoadedExecutable_Execute_Args {
    executable: *mut PJRT_LoadedExecutable,
    options: *mut PJRT_ExecuteOptions,
    argument_lists: *const *const *mut PJRT_Buffer,
    num_devices: usize,
    num_args: usize,
    output_lists: *const *mut *mut PJRT_Buffer,
    device_complete_events: *mut *mut PJRT_Event,
    execute_device: *mut PJRT_Device,
});

args_struct!(PJRT_Buffer_Destroy_Args { buffer: *mut PJRT_Buffer });
args_struct!(PJRT_Buffer_ElementType_Args { buffer: *mut PJRT_Buffer, element_type as r#type: PJRT_Buffer_Type });
args_struct!(PJRT_Buffer_Dimensions_Args { buffer: *mut PJRT_Buffer, dims: *const i64, num_dims: usize });
args_struct!(PJRT_Buffer_ToHostBuffer_Args {
    src: *mut PJRT_Buffer,
    host_layout: *mut c_void,
    dst: *mut c_void,
    dst_size: usize,
    event: *mut PJRT_Event,
});

// ------------------------------------------------------------------ the function table --------

/// A PJRT entry point: takes its argument struct, returns an error or null.
pub type Fn<A> = Option<unsafe extern "C" fn(*mut A) -> *mut PJRT_Error>;
/// An entry point accelrt does not call; declared only to keep the table's layout.
pub type Unused = Option<unsafe extern "C" fn()>;

c_struct!(PJRT_Api {
    struct_size: usize,
    extension_start: *mut PJRT_Extension_Base,
    pjrt_api_version: PJRT_Api_Version,

    PJRT_Error_Destroy: Option<unsafe extern "C" fn(*mut PJRT_Error_Destroy_Args)>,
    PJRT_Error_Message: Option<unsafe extern "C" fn(*mut PJRT_Error_Message_Args)>,
    PJRT_Error_GetCode: Fn<PJRT_Error_GetCode_Args>,

    PJRT_Plugin_Initialize: Fn<PJRT_Plugin_Initialize_Args>,
    PJRT_Plugin_Attributes: Fn<PJRT_Plugin_Attributes_Args>,

    PJRT_Event_Destroy: Fn<PJRT_Event_Destroy_Args>,
    PJRT_Event_IsReady: Unused,
    PJRT_Event_Error: Unused,
    PJRT_Event_Await: Fn<PJRT_Event_Await_Args>,
    PJRT_Event_OnReady: Unused,

    PJRT_Client_Create: Fn<PJRT_Client_Create_Args>,
    PJRT_Client_Destroy: Fn<PJRT_Client_Destroy_Args>,
    PJRT_Client_PlatformName: Fn<PJRT_Client_PlatformName_Args>,
    PJRT_Client_ProcessIndex: Unused,
    PJRT_Client_PlatformVersion: Fn<PJRT_Client_PlatformVersion_Args>,
    PJRT_Client_Devices: Unused,
    PJRT_Client_AddressableDevices: Fn<PJRT_Client_AddressableDevices_Args>,
    PJRT_Client_LookupDevice: Unused,
    PJRT_Client_LookupAddressableDevice: Unused,
    PJRT_Client_AddressableMemories: Unused,
    PJRT_Client_Compile: Fn<PJRT_Client_Compile_Args>,
    PJRT_Client_DefaultDeviceAssignment: Unused,
    PJRT_Client_BufferFromHostBuffer: Fn<PJRT_Client_BufferFromHostBuffer_Args>,

    PJRT_DeviceDescription_Id: Fn<PJRT_DeviceDescription_Id_Args>,
    PJRT_DeviceDescription_ProcessIndex: Unused,
    PJRT_DeviceDescription_Attributes: Unused,
    PJRT_DeviceDescription_Kind: Fn<PJRT_DeviceDescription_Kind_Args>,
    PJRT_DeviceDescription_DebugString: Unused,
    PJRT_DeviceDescription_ToString: Fn<PJRT_DeviceDescription_ToString_Args>,

    PJRT_Device_GetDescription: Fn<PJRT_Device_GetDescription_Args>,
    PJRT_Device_IsAddressable: Unused,
    PJRT_Device_LocalHardwareId: Unused,
    PJRT_Device_AddressableMemories: Unused,
    PJRT_Device_DefaultMemory: Unused,
    PJRT_Device_MemoryStats: Unused,

    PJRT_Memory_Id: Unused,
    PJRT_Memory_Kind: Unused,
    PJRT_Memory_DebugString: Unused,
    PJRT_Memory_ToString: Unused,
    PJRT_Memory_AddressableByDevices: Unused,

    PJRT_Executable_Destroy: Fn<PJRT_Executable_Destroy_Args>,
    PJRT_Executable_Name: Fn<PJRT_Executable_Name_Args>,
    PJRT_Executable_NumReplicas: Unused,
    PJRT_Executable_NumPartitions: Unused,
    PJRT_Executable_NumOutputs: Fn<PJRT_Executable_NumOutputs_Args>,
    PJRT_Executable_SizeOfGeneratedCodeInBytes: Unused,
    PJRT_Executable_GetCostAnalysis: Unused,
    PJRT_Executable_OutputMemoryKinds: Unused,
    PJRT_Executable_OptimizedProgram: Unused,
    PJRT_Executable_Serialize: Fn<PJRT_Executable_Serialize_Args>,

    PJRT_LoadedExecutable_Destroy: Fn<PJRT_LoadedExecutable_Destroy_Args>,
    PJRT_LoadedExecutable_GetExecutable: Fn<PJRT_LoadedExecutable_GetExecutable_Args>,
    PJRT_LoadedExecutable_AddressableDevices: Unused,
    PJRT_LoadedExecutable_Delete: Unused,
    PJRT_LoadedExecutable_IsDeleted: Unused,
    PJRT_LoadedExecutable_Execute: Fn<PJRT_LoadedExecutable_Execute_Args>,
    PJRT_Executable_DeserializeAndLoad: Fn<PJRT_Executable_DeserializeAndLoad_Args>,
    PJRT_LoadedExecutable_Fingerprint: Unused,

    PJRT_Buffer_Destroy: Fn<PJRT_Buffer_Destroy_Args>,
    PJRT_Buffer_ElementType: Fn<PJRT_Buffer_ElementType_Args>,
    PJRT_Buffer_Dimensions: Fn<PJRT_Buffer_Dimensions_Args>,
    PJRT_Buffer_UnpaddedDimensions: Unused,
    PJRT_Buffer_DynamicDimensionIndices: Unused,
    PJRT_Buffer_GetMemoryLayout: Unused,
    PJRT_Buffer_OnDeviceSizeInBytes: Unused,
    PJRT_Buffer_Device: Unused,
    PJRT_Buffer_Memory: Unused,
    PJRT_Buffer_Delete: Unused,
    PJRT_Buffer_IsDeleted: Unused,
    PJRT_Buffer_CopyToDevice: Unused,
    PJRT_Buffer_ToHostBuffer: Fn<PJRT_Buffer_ToHostBuffer_Args>,
    PJRT_Buffer_IsOnCpu: Unused,
    PJRT_Buffer_ReadyEvent: Unused,
    PJRT_Buffer_UnsafePointer: Unused,
    PJRT_Buffer_IncreaseExternalReferenceCount: Unused,
    PJRT_Buffer_DecreaseExternalReferenceCount: Unused,
    PJRT_Buffer_OpaqueDeviceMemoryDataPointer: Unused,

    PJRT_CopyToDeviceStream_Destroy: Unused,
    PJRT_CopyToDeviceStream_AddChunk: Unused,
    PJRT_CopyToDeviceStream_TotalBytes: Unused,
    PJRT_CopyToDeviceStream_GranuleSize: Unused,
    PJRT_CopyToDeviceStream_CurrentBytes: Unused,

    PJRT_TopologyDescription_Create: Unused,
    PJRT_TopologyDescription_Destroy: Unused,
    PJRT_TopologyDescription_PlatformName: Unused,
    PJRT_TopologyDescription_PlatformVersion: Unused,
    PJRT_TopologyDescription_GetDeviceDescriptions: Unused,
    PJRT_TopologyDescription_Serialize: Unused,
    PJRT_TopologyDescription_Attributes: Unused,

    PJRT_Compile: Unused,

    // Appended in later minor versions, in this order.
    PJRT_Executable_OutputElementTypes: Fn<PJRT_Executable_OutputElementTypes_Args>,
    PJRT_Executable_OutputDimensions: Fn<PJRT_Executable_OutputDimensions_Args>,
    PJRT_Buffer_CopyToMemory: Unused,
    PJRT_Client_CreateViewOfDeviceBuffer: Unused,
    PJRT_Executable_Fingerprint: Fn<PJRT_Executable_Fingerprint_Args>,
    PJRT_Client_TopologyDescription: Unused,
    PJRT_Executable_GetCompiledMemoryStats: Unused,
    PJRT_Memory_Kind_Id: Unused,
    PJRT_ExecuteContext_Create: Unused,
    PJRT_ExecuteContext_Destroy: Unused,
    PJRT_Buffer_CopyRawToHost: Unused,
    PJRT_AsyncHostToDeviceTransferManager_Destroy: Unused,
    PJRT_AsyncHostToDeviceTransferManager_TransferData: Unused,
    PJRT_Client_CreateBuffersForAsyncHostToDevice: Unused,
    PJRT_AsyncHostToDeviceTransferManager_RetrieveBuffer: Unused,
    PJRT_AsyncHostToDeviceTransferManager_Device: Unused,
    PJRT_AsyncHostToDeviceTransferManager_BufferCount: Unused,
    PJRT_AsyncHostToDeviceTransferManager_BufferSize: Unused,
    PJRT_AsyncHostToDeviceTransferManager_SetBufferError: Unused,
    PJRT_AsyncHostToDeviceTransferManager_AddMetadata: Unused,
    PJRT_Client_DmaMap: Unused,
    PJRT_Client_DmaUnmap: Unused,
    PJRT_Client_CreateUninitializedBuffer: Unused,
    PJRT_Client_UpdateGlobalProcessInfo: Unused,
    PJRT_TopologyDescription_Deserialize: Unused,
    PJRT_Client_CreateAliasBuffer: Unused,
    PJRT_Client_FulfillAliasBuffer: Unused,
    PJRT_LoadedExecutable_GetDeviceAssignment: Unused,
});

/// The plugin's entry point, `GetPjrtApi`.
pub type GetPjrtApi = unsafe extern "C" fn() -> *const PJRT_Api;

/// A struct's C name, `STRUCT_SIZE` and (field, offset) list.
pub type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

/// Every declared struct's table, for the layout test.
pub fn all_layouts() -> Vec<Layout> {
    fn entry<T: CStruct>() -> Layout {
        (T::NAME, T::STRUCT_SIZE, T::field_offsets())
    }
    vec![
        entry::<PJRT_Api>(),
        entry::<PJRT_Api_Version>(),
        entry::<PJRT_Error_Destroy_Args>(),
        entry::<PJRT_Error_Message_Args>(),
        entry::<PJRT_Error_GetCode_Args>(),
        entry::<PJRT_NamedValue>(),
        entry::<PJRT_Plugin_Initialize_Args>(),
        entry::<PJRT_Plugin_Attributes_Args>(),
        entry::<PJRT_Event_Destroy_Args>(),
        entry::<PJRT_Event_Await_Args>(),
        entry::<PJRT_Client_Create_Args>(),
        entry::<PJRT_Client_Destroy_Args>(),
        entry::<PJRT_Client_PlatformName_Args>(),
        entry::<PJRT_Client_PlatformVersion_Args>(),
        entry::<PJRT_Client_AddressableDevices_Args>(),
        entry::<PJRT_Program>(),
        entry::<PJRT_Client_Compile_Args>(),
        entry::<PJRT_Client_BufferFromHostBuffer_Args>(),
        entry::<PJRT_DeviceDescription_Id_Args>(),
        entry::<PJRT_DeviceDescription_Kind_Args>(),
        entry::<PJRT_DeviceDescription_ToString_Args>(),
        entry::<PJRT_Device_GetDescription_Args>(),
        entry::<PJRT_Executable_Destroy_Args>(),
        entry::<PJRT_Executable_Name_Args>(),
        entry::<PJRT_Executable_NumOutputs_Args>(),
        entry::<PJRT_Executable_Fingerprint_Args>(),
        entry::<PJRT_Executable_OutputElementTypes_Args>(),
        entry::<PJRT_Executable_OutputDimensions_Args>(),
        entry::<PJRT_Executable_Serialize_Args>(),
        entry::<PJRT_Executable_DeserializeAndLoad_Args>(),
        entry::<PJRT_LoadedExecutable_Destroy_Args>(),
        entry::<PJRT_LoadedExecutable_GetExecutable_Args>(),
        entry::<PJRT_ExecuteOptions>(),
        entry::<PJRT_LoadedExecutable_Execute_Args>(),
        entry::<PJRT_Buffer_Destroy_Args>(),
        entry::<PJRT_Buffer_ElementType_Args>(),
        entry::<PJRT_Buffer_Dimensions_Args>(),
        entry::<PJRT_Buffer_ToHostBuffer_Args>(),
    ]
}
