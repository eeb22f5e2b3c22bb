use accelrt_core::DeviceSpec;

#[test]
fn device_strings_parse() {
    let p = |s: &str| s.parse::<DeviceSpec>();
    assert_eq!(p("cpu").unwrap(), DeviceSpec::Cpu);
    assert_eq!(p("cuda").unwrap(), DeviceSpec::Cuda(0));
    assert_eq!(p("cuda:3").unwrap(), DeviceSpec::Cuda(3));
    assert_eq!(p("neuron:2").unwrap(), DeviceSpec::Neuron { first: 2, count: 1 });
    assert_eq!(p("neuron:0-23").unwrap(), DeviceSpec::Neuron { first: 0, count: 24 });
    assert_eq!(p("xla:cpu").unwrap(), DeviceSpec::XlaCpu);
    let pjrt = |path: &str, device| DeviceSpec::Pjrt { plugin: path.into(), device };
    assert_eq!(p("pjrt:/opt/plugin.so").unwrap(), pjrt("/opt/plugin.so", 0));
    assert_eq!(p("pjrt:/opt/plugin.so:3").unwrap(), pjrt("/opt/plugin.so", 3));
    assert_eq!(p("pjrt:relative/lib.so:0").unwrap(), pjrt("relative/lib.so", 0));
    for s in ["cpu", "cuda:1", "neuron:4", "neuron:0-1", "xla:cpu", "pjrt:/opt/plugin.so", "pjrt:/opt/plugin.so:2"] {
        assert_eq!(p(s).unwrap().to_string(), s);
    }
}

#[test]
fn bad_device_strings_say_why() {
    for (s, why) in [
        ("gpu:0", "expected `cpu`"),
        ("cuda:x", "integer from 0 to 65535"),
        ("cuda:-1", "integer from 0 to 65535"),
        // Past u32 ranges used to wrap `first + count` to 0 and pass the core-count check.
        ("neuron:4294967295", "integer from 0 to 65535"),
        ("neuron:0-4294967295", "integer from 0 to 65535"),
        ("neuron:1-65536", "integer from 0 to 65535"),
        ("cpu:0", "takes no index"),
        ("neuron:3-1", "A ≤ B"),
        ("", "expected `cpu`"),
        ("xla:gpu", "only built-in XLA device"),
        ("pjrt", "needs a plugin library"),
        ("pjrt:", "needs the path"),
        ("pjrt::1", "needs the path"),
    ] {
        let err = s.parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains(why), "{s:?}: {err}");
    }
}
