//! Any bytes as a GGUF file: parse, read every tensor, read the Llama config and build its graph,
//! build the tokenizer.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelrt_fuzz::gguf(data));
