//! Writes the seed inputs of the byte-level targets into fuzz/seeds/<target>/: the small valid
//! models the models crate's tests build (a 2-block Llama GGUF with its tokenizer, a 2-layer BERT
//! safetensors file) and a few smaller files. Deterministic, so regenerating changes nothing.

use accelrt_fuzz::common;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    write("gguf", "tiny-llama.gguf", &common::llama_gguf().bytes);
    let mut rng = common::Rng::new(1);
    let tensors = [
        common::f32_tensor("a", &[2, 8], &mut rng),
        common::q4_1_tensor("b", &[1, 64], &mut rng),
        common::Tensor { name: "c".into(), dims: vec![1, 256], type_id: 16, data: vec![0; 66] },
    ];
    write("gguf", "three-tensors.gguf", &common::gguf(&[("general.alignment", common::Meta::U32(32))], &tensors).bytes);
    write("safetensors", "tiny-bert.safetensors", &common::safetensors_bytes(&common::bert_weight_shapes(2), 3));
    let one = vec![("embeddings.word_embeddings.weight".to_string(), vec![12, 8])];
    write("safetensors", "one.safetensors", &common::safetensors_bytes(&one, 1));
}
