//! Checks every declaration in `ffi` against the C header shipped in the plugin wheel: a small C
//! program prints each struct's `*_STRUCT_SIZE` and field offsets, compiled with the system C
//! compiler (`cc`, or `$CC`). Needs the plugin fetched (as every plugin test does) and a C compiler.

use crate::fetch::{PluginStore, XLA_CPU};
use crate::ffi::all_layouts;
use std::fmt::Write as _;
use std::process::Command;

#[test]
fn layout_matches_plugin_header() {
    let installed = PluginStore::from_env()
        .ensure(&XLA_CPU)
        .unwrap_or_else(|e| panic!("the XLA CPU plugin is needed for this test (python3 with pip fetches it): {e}"));
    let layouts = all_layouts();

    let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"pjrt_c_api.h\"\nint main(void) {\n");
    let mut expected = String::new();
    for (name, size, fields) in &layouts {
        writeln!(c, "  printf(\"{name} size %zu\\n\", (size_t){name}_STRUCT_SIZE);").unwrap();
        writeln!(expected, "{name} size {size}").unwrap();
        for (field, offset) in fields {
            let field = field.trim_start_matches("r#");
            writeln!(c, "  printf(\"{name}.{field} %zu\\n\", offsetof({name}, {field}));").unwrap();
            writeln!(expected, "{name}.{field} {offset}").unwrap();
        }
    }
    c.push_str("  return 0;\n}\n");

    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout.c");
    let binary = dir.path().join("layout");
    std::fs::write(&source, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let include = installed.header.parent().unwrap();
    let status = Command::new(&cc)
        .arg("-std=c11")
        .arg("-I")
        .arg(include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .status()
        .unwrap_or_else(|e| panic!("this test needs a C compiler (`{cc}`): {e}"));
    assert!(status.success(), "compiling the layout probe against {} failed", installed.header.display());
    let output = Command::new(&binary).output().unwrap();
    let actual = String::from_utf8(output.stdout).unwrap();

    let mismatches: Vec<String> = expected
        .lines()
        .zip(actual.lines())
        .filter(|(e, a)| e != a)
        .map(|(e, a)| format!("declared `{e}`, header says `{a}`"))
        .collect();
    assert_eq!(expected.lines().count(), actual.lines().count());
    assert!(mismatches.is_empty(), "ffi.rs disagrees with pjrt_c_api.h:\n{}", mismatches.join("\n"));
}
