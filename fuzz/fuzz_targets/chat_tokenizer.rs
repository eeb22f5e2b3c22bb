//! A GGUF tokenizer from structured input (vocabulary, types, merges, pre-tokenizer, special ids,
//! chat template): build it, encode, decode, apply the template.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: accelrt_fuzz::TokenizerInput| accelrt_fuzz::chat_tokenizer(input));
