//! Any bytes as a safetensors file: validate, read every tensor, check a BERT config against it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelrt_fuzz::safetensors(data));
