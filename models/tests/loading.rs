//! Model configuration, heads, weights files and the registry, without the real model.

use accelrt_core::{DType, WeightSource};
use accelrt_models::bert::{self, BertConfig, Pooling, SentenceHead};
use accelrt_models::{lookup, ModelError, SafetensorsWeights};
use std::collections::HashMap;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 2,
  "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu", "max_position_embeddings": 16,
  "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#;

#[test]
fn bert_config_builds_a_valid_graph() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "config.json", CONFIG);
    let cfg = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
    let head = SentenceHead { pooling: Pooling::Mean, normalize: true };
    let g = bert::build_graph(&cfg, head, "").unwrap();
    assert_eq!(
        g.inputs().map(|(_, n)| n.name.as_str()).collect::<Vec<_>>(),
        ["input_ids", "attention_mask", "token_type_ids"]
    );
    // 3 embedding tables + LN(2) + per layer: 6 linears × 2 + 2 LNs × 2 = 16.
    assert_eq!(g.weights().count(), 5 + 2 * 16);
    assert_eq!(g.outputs()[0].0, "embeddings");
    let with_prefix = bert::build_graph(&cfg, head, "bert.").unwrap();
    assert!(with_prefix.weights().all(|(_, n)| n.name.starts_with("bert.")));
    assert_ne!(with_prefix.content_hash(), g.content_hash());
}

#[test]
fn unsupported_configs_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (CONFIG.replace("\"gelu\"", "\"mish\""), "hidden_act `mish`"),
        (CONFIG.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"), "not a multiple"),
        (CONFIG.replace("\"bert\"", "\"gpt2\""), "not a BERT encoder"),
        (CONFIG.replace("\"vocab_size\": 30,", ""), "vocab_size"),
        ("{ broken".to_string(), "config.json"),
    ] {
        write(dir.path(), "config.json", &text);
        let err = BertConfig::from_file(&dir.path().join("config.json")).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn sentence_heads_are_read_from_the_modules() {
    let dir = tempfile::tempdir().unwrap();
    let modules = |normalize: bool| {
        let mut m = vec![
            r#"{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"}"#,
            r#"{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}"#,
        ];
        if normalize {
            m.push(r#"{"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}"#);
        }
        format!("[{}]", m.join(","))
    };
    write(dir.path(), "modules.json", &modules(true));
    write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_mean_tokens": true}"#);
    assert_eq!(SentenceHead::from_dir(dir.path()).unwrap(), SentenceHead { pooling: Pooling::Mean, normalize: true });
    write(dir.path(), "modules.json", &modules(false));
    write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_cls_token": true}"#);
    assert_eq!(SentenceHead::from_dir(dir.path()).unwrap(), SentenceHead { pooling: Pooling::Cls, normalize: false });
    write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_max_tokens": true}"#);
    let err = SentenceHead::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("only exactly one of mean or CLS pooling"), "{err}");
}

fn safetensors_bytes() -> Vec<u8> {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).unwrap();
    let i8s = [1u8, 2];
    let odd = safetensors::tensor::TensorView::new(safetensors::Dtype::I8, vec![2], &i8s).unwrap();
    safetensors::serialize([("w", view), ("odd", odd)], None::<HashMap<String, String>>).unwrap()
}

#[test]
fn safetensors_weights_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, safetensors_bytes()).unwrap();
    let w = SafetensorsWeights::open(&path).unwrap();
    let v = w.get("w").unwrap();
    assert_eq!((v.dtype, v.shape.clone()), (DType::F32, vec![2, 2]));
    assert_eq!(v.to_host().unwrap().as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    assert!(w.get("missing").unwrap_err().to_string().contains("weight `missing`: not in"));
    assert!(w.get("odd").unwrap_err().to_string().contains("I8 is not supported"));

    let bytes = safetensors_bytes();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = SafetensorsWeights::open(&path).err().unwrap();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    std::fs::write(&path, b"\x05").unwrap();
    assert!(SafetensorsWeights::open(&path).is_err());
}

#[test]
fn the_registry_knows_minilm_and_lists_names_when_asked_for_another() {
    assert_eq!(lookup("all-MiniLM-L6-v2").unwrap().id, "all-minilm-l6-v2");
    let err = lookup("bert-large").unwrap_err().to_string();
    assert!(err.contains("unknown model `bert-large`") && err.contains("all-minilm-l6-v2"), "{err}");
}
