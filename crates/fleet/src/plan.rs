//! What a fleet run launches, what it may cost, and the user data each instance boots with.

use crate::ec2::LaunchSpec;
use crate::FleetError;
use accelrt_bench::catalog::Catalog;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The instance families accelrt deploys to; the names are deploy/serving.yaml's `Family` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// c7i, m7i, …: x86_64, Amazon Linux 2023.
    CpuX86,
    /// c7g, m7g, …: arm64 (Graviton), Amazon Linux 2023.
    CpuGraviton,
    /// g5, g6, g6e, p4d, p5: Ubuntu 24.04 with the driver and CUDA runtime installed at boot.
    Nvidia,
    /// inf2, trn1: the AWS Neuron DLAMI.
    Neuron,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 4] = [Family::CpuX86, Family::CpuGraviton, Family::Nvidia, Family::Neuron];

    /// `cpu-x86`, `cpu-graviton`, `nvidia`, `neuron`.
    pub fn name(self) -> &'static str {
        match self {
            Family::CpuX86 => "cpu-x86",
            Family::CpuGraviton => "cpu-graviton",
            Family::Nvidia => "nvidia",
            Family::Neuron => "neuron",
        }
    }

    /// Parses [`Family::name`].
    pub fn parse(s: &str) -> Result<Family, FleetError> {
        Family::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            FleetError::Input(format!("unknown family {s:?}: one of {}", Family::ALL.map(|f| f.name()).join(", ")))
        })
    }

    /// The family of an instance type: the catalog's category when it lists the type, else the
    /// type's name (g*/p* NVIDIA, inf*/trn* Neuron, a `g` after the generation digit Graviton).
    pub fn of(instance_type: &str, catalog: &Catalog) -> Result<Family, FleetError> {
        if let Some(i) = catalog.get(instance_type) {
            return match i.category.as_str() {
                "cpu" => Ok(Self::cpu_of_name(instance_type)),
                "gpu-g" | "gpu-p" => Ok(Family::Nvidia),
                "inferentia2" | "trainium1" | "trainium2" => Ok(Family::Neuron),
                other => Err(FleetError::Input(format!(
                    "{instance_type} ({other}) has no accelrt backend to benchmark (inf1 needs neuron-cc, which accelrt does not drive)"
                ))),
            };
        }
        let series: String = instance_type.chars().take_while(|c| c.is_ascii_lowercase()).collect();
        Ok(match series.as_str() {
            "g" | "p" => Family::Nvidia,
            "inf" | "trn" => {
                if instance_type.starts_with("inf1") {
                    return Err(FleetError::Input(format!("{instance_type}: Inferentia1 has no accelrt backend")));
                }
                Family::Neuron
            }
            _ => Self::cpu_of_name(instance_type),
        })
    }

    fn cpu_of_name(instance_type: &str) -> Family {
        // c7g, m7gd, c8g, r7gn: letters, the generation digit(s), then `g` for Graviton.
        let rest = instance_type.trim_start_matches(|c: char| c.is_ascii_lowercase());
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        if rest.starts_with('g') {
            Family::CpuGraviton
        } else {
            Family::CpuX86
        }
    }

    /// The device `accelrt bench` runs on.
    pub fn backend(self) -> &'static str {
        match self {
            Family::CpuX86 | Family::CpuGraviton => "cpu",
            Family::Nvidia => "cuda:0",
            Family::Neuron => "neuron:0",
        }
    }

    /// The AMI's root device name (Amazon Linux: /dev/xvda, Ubuntu: /dev/sda1).
    pub fn root_device(self) -> &'static str {
        match self {
            Family::CpuX86 | Family::CpuGraviton => "/dev/xvda",
            Family::Nvidia | Family::Neuron => "/dev/sda1",
        }
    }

    /// Root volume size in GiB: room for the OS, the driver or SDK, and the model.
    pub fn root_volume_gib(self) -> u32 {
        match self {
            Family::CpuX86 | Family::CpuGraviton => 30,
            Family::Nvidia => 80,
            Family::Neuron => 150,
        }
    }

    /// The public SSM parameter naming the family's default AMI (docs/deploy.md shows how to read it).
    pub fn ami_ssm_parameter(self) -> &'static str {
        match self {
            Family::CpuX86 => "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
            Family::CpuGraviton => "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
            Family::Nvidia => "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
            Family::Neuron => "/aws/service/neuron/dlami/multi-framework/ubuntu-24.04/latest/image_id",
        }
    }
}

/// Where an instance's accelrt binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// `s3://bucket/key`.
    pub url: String,
    /// SHA-256, 64 lower-case hex digits; the instance refuses a binary that does not match.
    pub sha256: String,
}

/// On-demand or spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Market {
    /// On-demand instances.
    OnDemand,
    /// One-time spot instances, maximum price the on-demand price (so the spend bound holds).
    Spot,
}

/// Everything `accelrt fleet run` is told.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// One instance of each.
    pub instance_types: Vec<String>,
    /// The model each instance benchmarks (a name `accelrt fetch` knows).
    pub model: String,
    /// Results go to `s3://bucket/prefix/run_id/<instance type>/`.
    pub bucket: String,
    /// Key prefix (may be empty).
    pub prefix: String,
    /// The binary per family (only the families launched need one).
    pub binaries: BTreeMap<Family, Binary>,
    /// The AMI per family (only the families launched need one).
    pub amis: BTreeMap<Family, String>,
    /// The instance profile (S3 read of the binary, write under the prefix).
    pub instance_profile: String,
    /// Optional subnet.
    pub subnet_id: Option<String>,
    /// Optional security groups (the instances take no inbound traffic; outbound is what matters).
    pub security_group_ids: Vec<String>,
    /// On-demand or spot.
    pub market: Market,
    /// Refuse to launch if the worst case (every instance running until its deadline) costs more.
    pub max_spend_usd: f64,
    /// Each instance powers off (and so terminates) this many minutes after boot, done or not.
    pub max_minutes: u32,
    /// US$/h for instance types the catalog does not price.
    pub prices: BTreeMap<String, f64>,
    /// Extra `accelrt bench` arguments, passed to every instance.
    pub bench_args: Vec<String>,
    /// Extra tags on everything launched.
    pub tags: Vec<(String, String)>,
    /// Optional Neuron compile cache (`s3://bucket/prefix/`) copied to Neuron instances.
    pub neff_cache: Option<String>,
    /// The run's id (see [`new_run_id`]).
    pub run_id: String,
    /// The region the instances upload to.
    pub region: String,
}

/// One instance to launch.
#[derive(Debug, Clone)]
pub struct PlannedInstance {
    /// e.g. `g5.xlarge`.
    pub instance_type: String,
    /// Its family.
    pub family: Family,
    /// US$ per hour (on-demand; the spot maximum too).
    pub usd_per_hour: f64,
    /// Where the price came from.
    pub price_source: String,
    /// The RunInstances request.
    pub spec: LaunchSpec,
}

/// A checked fleet run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The run's id.
    pub run_id: String,
    /// Bucket and full key prefix of the run (`prefix/run_id`).
    pub bucket: String,
    /// `prefix/run_id` (no trailing slash).
    pub run_prefix: String,
    /// What is launched.
    pub instances: Vec<PlannedInstance>,
    /// Each instance's deadline in minutes.
    pub max_minutes: u32,
    /// Σ price × max_minutes: what the run costs at most (EBS volumes, a few cents, not included).
    pub worst_case_usd: f64,
    /// The bound it was checked against.
    pub max_spend_usd: f64,
    /// On-demand or spot.
    pub market: Market,
}

/// A fresh run id: UTC time and 6 random hex digits (`20261129T233000Z-3fa9c1`).
pub fn new_run_id() -> String {
    format!("{}-{:06x}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), rand::random::<u32>() & 0xff_ffff)
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), FleetError> {
    if s.is_empty() || s.len() > max || s.chars().any(|c| c.is_control()) {
        return Err(FleetError::Input(format!(
            "{what} must be 1 to {max} characters without control characters: {s:?}"
        )));
    }
    Ok(())
}

fn check_s3_url(what: &str, url: &str) -> Result<(), FleetError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| FleetError::Input(format!("{what} must be s3://bucket/key, got {url:?}")))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    crate::s3::check_bucket(bucket)?;
    if key.is_empty() {
        return Err(FleetError::Input(format!("{what} names no key: {url:?}")));
    }
    check_text(what, url, 1024)
}

/// A string single-quoted for bash (`'` becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Checks the options against the catalog and the spend bound, and builds every launch request.
pub fn plan(o: &FleetOptions, catalog: &Catalog) -> Result<Plan, FleetError> {
    if o.instance_types.is_empty() {
        return Err(FleetError::Input("give at least one instance type".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &o.instance_types {
        let ok = t.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
        if !ok {
            return Err(FleetError::Input(format!("not an instance type: {t:?}")));
        }
        if !seen.insert(t) {
            return Err(FleetError::Input(format!("{t} is listed twice (one instance per type)")));
        }
    }
    if !o.model.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        || o.model.is_empty()
        || o.model.len() > 128
    {
        return Err(FleetError::Input(format!(
            "--model must be a registry name (e.g. all-minilm-l6-v2), got {:?}",
            o.model
        )));
    }
    crate::s3::check_bucket(&o.bucket)?;
    let prefix = o.prefix.trim_matches('/');
    if !prefix.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c))
        || prefix.contains("..")
        || prefix.len() > 512
    {
        return Err(FleetError::Input(format!("--prefix may hold only A-Z a-z 0-9 - _ . /: {:?}", o.prefix)));
    }
    if !(10..=24 * 60).contains(&o.max_minutes) {
        return Err(FleetError::Input(format!("--max-minutes must be 10 to 1440, got {}", o.max_minutes)));
    }
    if !(o.max_spend_usd.is_finite() && o.max_spend_usd > 0.0) {
        return Err(FleetError::Input(format!(
            "--max-spend must be a positive number of US$, got {}",
            o.max_spend_usd
        )));
    }
    check_text("--instance-profile", &o.instance_profile, 128)?;
    for a in &o.bench_args {
        check_text("a bench argument", a, 1024)?;
    }
    if let Some(n) = &o.neff_cache {
        check_s3_url("--neff-cache", n)?;
    }
    for (k, v) in &o.tags {
        check_text("a tag key", k, 128)?;
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(FleetError::Input(format!("tag keys may not start with aws: ({k})")));
        }
        if v.len() > 256 || v.chars().any(|c| c.is_control()) {
            return Err(FleetError::Input(format!("tag {k}: the value must be at most 256 characters")));
        }
    }
    let run_prefix = if prefix.is_empty() { o.run_id.clone() } else { format!("{prefix}/{}", o.run_id) };
    let mut instances = Vec::new();
    for t in &o.instance_types {
        let family = Family::of(t, catalog)?;
        let (usd_per_hour, price_source) = match o.prices.get(t) {
            Some(p) if p.is_finite() && *p > 0.0 => (*p, "--price".to_string()),
            Some(p) => return Err(FleetError::Input(format!("--price {t}={p}: must be a positive US$/h"))),
            None => {
                let entry = catalog.get(t).ok_or_else(|| {
                    FleetError::Input(format!(
                        "{t} is not in the instance catalog, so its price is unknown: give --price {t}=USD_PER_HOUR (catalog types like it: {})",
                        catalog.close_names(t, 3).join(", ")
                    ))
                })?;
                let price = entry.prices.iter().find(|p| p.basis == "on-demand").ok_or_else(|| {
                    FleetError::Input(format!(
                        "the catalog has no on-demand price for {t}: give --price {t}=USD_PER_HOUR"
                    ))
                })?;
                (price.usd_per_hour, format!("catalog: {}, read {}", price.source, price.date_read))
            }
        };
        let binary = o.binaries.get(&family).ok_or_else(|| {
            FleetError::Input(format!(
                "{t} is a {} instance: give --binary {}=s3://BUCKET/KEY",
                family.name(),
                family.name()
            ))
        })?;
        check_s3_url("--binary", &binary.url)?;
        if binary.sha256.len() != 64 || !binary.sha256.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(FleetError::Input(format!(
                "--binary-sha256 {}: 64 lower-case hex digits (sha256sum), got {:?}",
                family.name(),
                binary.sha256
            )));
        }
        let image_id = o.amis.get(&family).ok_or_else(|| {
            FleetError::Input(format!(
                "{t} is a {} instance: give --ami {}=ami-… (e.g. from the SSM parameter {})",
                family.name(),
                family.name(),
                family.ami_ssm_parameter()
            ))
        })?;
        if !image_id.starts_with("ami-") || image_id.len() > 32 || !image_id[4..].bytes().all(|c| c.is_ascii_hexdigit())
        {
            return Err(FleetError::Input(format!("not an AMI id: {image_id:?}")));
        }
        let mut tags = vec![
            ("Name".to_string(), format!("accelrt-fleet-{}-{t}", o.run_id)),
            ("accelrt:fleet-run".to_string(), o.run_id.clone()),
            ("accelrt:created-by".to_string(), "accelrt fleet run".to_string()),
            ("accelrt:results".to_string(), format!("s3://{}/{run_prefix}/{t}/", o.bucket)),
        ];
        tags.extend(o.tags.iter().cloned());
        let per_hour_price = usd_per_hour;
        let user_data = user_data(o, &run_prefix, t, family, binary, per_hour_price);
        if user_data.len() > 16384 {
            return Err(FleetError::Input(format!(
                "the user data for {t} is {} bytes, over EC2's 16 KiB",
                user_data.len()
            )));
        }
        let spec = LaunchSpec {
            instance_type: t.clone(),
            image_id: image_id.clone(),
            user_data,
            instance_profile: o.instance_profile.clone(),
            subnet_id: o.subnet_id.clone(),
            security_group_ids: o.security_group_ids.clone(),
            spot_max_price: (o.market == Market::Spot).then_some(usd_per_hour),
            root_device: family.root_device().into(),
            root_volume_gib: family.root_volume_gib(),
            tags,
            client_token: format!("{}-{t}", o.run_id),
        };
        instances.push(PlannedInstance { instance_type: t.clone(), family, usd_per_hour, price_source, spec });
    }
    let hours = o.max_minutes as f64 / 60.0;
    let worst_case_usd: f64 = instances.iter().map(|i| i.usd_per_hour * hours).sum();
    if worst_case_usd > o.max_spend_usd {
        return Err(FleetError::Input(format!(
            "the run could cost up to ${worst_case_usd:.2} ({} instance(s) for up to {} min), over --max-spend ${:.2}: lower --max-minutes or raise --max-spend",
            instances.len(),
            o.max_minutes,
            o.max_spend_usd
        )));
    }
    Ok(Plan {
        run_id: o.run_id.clone(),
        bucket: o.bucket.clone(),
        run_prefix,
        instances,
        max_minutes: o.max_minutes,
        worst_case_usd,
        max_spend_usd: o.max_spend_usd,
        market: o.market,
    })
}

impl Plan {
    /// What `--dry-run` prints: each instance, its price and AMI, the worst case and the bound.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let market = match self.market {
            Market::OnDemand => "on-demand",
            Market::Spot => "spot (maximum price = on-demand)",
        };
        let _ =
            writeln!(s, "fleet run {} ({market}), results to s3://{}/{}/", self.run_id, self.bucket, self.run_prefix);
        let _ = writeln!(
            s,
            "{:<16} {:<13} {:<22} {:>9} {:>11}  price source",
            "instance type", "family", "AMI", "US$/h", "at most US$"
        );
        for i in &self.instances {
            let _ = writeln!(
                s,
                "{:<16} {:<13} {:<22} {:>9.4} {:>11.2}  {}",
                i.instance_type,
                i.family.name(),
                i.spec.image_id,
                i.usd_per_hour,
                i.usd_per_hour * self.max_minutes as f64 / 60.0,
                i.price_source
            );
        }
        let _ = writeln!(
            s,
            "at most US${:.2} in all (each instance terminates itself {} min after boot; EBS, a few cents, not included); --max-spend US${:.2}",
            self.worst_case_usd, self.max_minutes, self.max_spend_usd
        );
        s
    }
}

/// The prepare step of each family: what `accelrt bench` needs that the AMI lacks (the same
/// packages and pins as deploy/user-data/).
fn prepare(family: Family) -> &'static str {
    match family {
        Family::CpuX86 | Family::CpuGraviton => "dnf install -y -q python3-pip\n",
        Family::Nvidia => {
            "export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q python3-pip python3-venv nvidia-driver-580-server-open nvidia-utils-580-server
command -v aws >/dev/null || snap install aws-cli --classic
case \"$(cloud-init query ds.meta_data.instance_type)\" in
  p4d.*|p4de.*|p5.*|p5e.*|p5en.*) apt-get install -y -q nvidia-fabricmanager-580 && systemctl start nvidia-fabricmanager ;;
esac
modprobe nvidia
nvidia-smi -L
python3 -m venv /opt/accelrt/cuda
/opt/accelrt/cuda/bin/python -m pip install --disable-pip-version-check -q nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
export LD_LIBRARY_PATH=$(/opt/accelrt/cuda/bin/python -c 'import nvidia, pathlib; print(pathlib.Path(nvidia.__path__[0]) / \"cu13\" / \"lib\")')
"
        }
        Family::Neuron => {
            "export DEBIAN_FRONTEND=noninteractive
grep -rqs neuron /etc/apt/sources.list.d/ || { echo 'no Neuron apt repository: launch the AWS Neuron DLAMI'; exit 1; }
apt-get update -q
apt-get install -y -q aws-neuronx-dkms aws-neuronx-runtime-lib aws-neuronx-tools
command -v aws >/dev/null || snap install aws-cli --classic
export LD_LIBRARY_PATH=/opt/aws/neuron/lib
case \"$(cloud-init query ds.meta_data.instance_type)\" in trn1*) export ACCELRT_NEURON_TARGET=trn1 ;; *) export ACCELRT_NEURON_TARGET=inf2 ;; esac
"
        }
    }
}

/// The cloud-config an instance boots with: prepare, install and verify the binary, fetch the
/// model, `accelrt bench --imds`, upload results, log and status, power off (= terminate). A
/// `shutdown` scheduled first is the run-time guard: the instance powers off at the deadline
/// whatever happens after it.
pub fn user_data(
    o: &FleetOptions,
    run_prefix: &str,
    instance_type: &str,
    family: Family,
    binary: &Binary,
    usd_per_hour: f64,
) -> String {
    let dest = format!("s3://{}/{run_prefix}/{instance_type}", o.bucket);
    let mut bench = vec![
        "accelrt".to_string(),
        "bench".into(),
        "--imds".into(),
        "--model".into(),
        shell_quote(&o.model),
        "--backend".into(),
        family.backend().into(),
        "--out".into(),
        "\"$work/results\"".into(),
        "--cache-dir".into(),
        "\"$work/cache\"".into(),
        "--no-progress".into(),
    ];
    // A type the catalog does not know is priced by the tool's --price; the harness on the
    // instance needs the same price (it refuses to guess one).
    if o.prices.contains_key(instance_type) {
        bench.push("--price-per-hour".into());
        bench.push(format!("{usd_per_hour}"));
    }
    bench.extend(o.bench_args.iter().map(|a| shell_quote(a)));
    let mut steps = String::new();
    steps.push_str(prepare(family));
    steps.push_str(&format!(
        "aws s3 cp --only-show-errors --region \"$region\" {} /usr/local/bin/accelrt.download\n",
        shell_quote(&binary.url)
    ));
    steps.push_str(&format!(
        "echo {}  /usr/local/bin/accelrt.download | sha256sum --check --strict\n",
        shell_quote(&binary.sha256)
    ));
    steps.push_str("install -m 0755 /usr/local/bin/accelrt.download /usr/local/bin/accelrt\n");
    steps.push_str(&format!("accelrt fetch {} --cache-dir \"$work/cache\"\n", shell_quote(&o.model)));
    if family == Family::Neuron {
        if let Some(n) = &o.neff_cache {
            steps.push_str(&format!(
                "aws s3 sync --only-show-errors --region \"$region\" {} \"$work/cache/neff\"\nexport ACCELRT_NEFF_CACHE=\"$work/cache/neff\"\n",
                shell_quote(n)
            ));
        }
    }
    steps.push_str(&bench.join(" "));
    steps.push('\n');
    let indent = |text: &str, n: usize| -> String {
        text.lines().map(|l| if l.is_empty() { "\n".to_string() } else { format!("{}{l}\n", " ".repeat(n)) }).collect()
    };
    let steps = format!(
        "#!/bin/bash\n# The benchmark's steps; any failing step ends the script (errexit works here, in a\n# process of its own, where it would be ignored inside the caller's `if`).\nset -euo pipefail\n{steps}"
    );
    let script = format!(
        r#"#!/bin/bash
# accelrt benchmark fleet, run {run}, instance type {instance_type}: written by `accelrt fleet run`.
set -uo pipefail
# The run-time guard first: power off (the instance terminates: its shutdown behaviour) at the
# deadline, whatever happens below.
shutdown -h +{minutes}
export region={region}
dest={dest}
export work=/var/lib/accelrt-fleet
mkdir -p "$work/results"
finish() {{
  aws s3 cp --only-show-errors --region "$region" --recursive --exclude '*' --include '*.json' "$work/results" "$dest/results/"
  aws s3 cp --only-show-errors --region "$region" "$work/bench.log" "$dest/bench.log"
  echo "$1" | aws s3 cp --only-show-errors --region "$region" - "$dest/status"
  shutdown -h now
}}
/usr/local/sbin/accelrt-fleet-steps >"$work/bench.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
  finish done
else
  echo "steps failed with exit status $rc" >>"$work/bench.log"
  finish failed
fi
"#,
        run = o.run_id,
        minutes = o.max_minutes,
        region = shell_quote(&o.region),
        dest = shell_quote(&dest),
    );
    format!(
        "#cloud-config\n# accelrt benchmark fleet run {run}: {instance_type} ({family}).\nwrite_files:\n  - path: /usr/local/sbin/accelrt-fleet-steps\n    permissions: \"0755\"\n    content: |\n{steps}  - path: /usr/local/sbin/accelrt-fleet-bench\n    permissions: \"0755\"\n    content: |\n{script}runcmd:\n  - [/usr/local/sbin/accelrt-fleet-bench]\n",
        run = o.run_id,
        family = family.name(),
        steps = indent(&steps, 6),
        script = indent(&script, 6),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn options() -> FleetOptions {
        let sha = "ab".repeat(32);
        let mut binaries = BTreeMap::new();
        let mut amis = BTreeMap::new();
        for f in Family::ALL {
            binaries.insert(f, Binary { url: format!("s3://accelrt-bin/{}/accelrt", f.name()), sha256: sha.clone() });
            amis.insert(f, "ami-0123456789abcdef0".to_string());
        }
        FleetOptions {
            instance_types: vec!["c7i.xlarge".into(), "g5.xlarge".into(), "inf2.xlarge".into()],
            model: "all-minilm-l6-v2".into(),
            bucket: "accelrt-results".into(),
            prefix: "fleet".into(),
            binaries,
            amis,
            instance_profile: "accelrt-fleet".into(),
            subnet_id: None,
            security_group_ids: vec![],
            market: Market::OnDemand,
            max_spend_usd: 5.0,
            max_minutes: 60,
            prices: BTreeMap::new(),
            bench_args: vec![],
            tags: vec![],
            neff_cache: None,
            run_id: "20261129T233000Z-abcdef".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn families_from_catalog_and_names() {
        let c = Catalog::builtin();
        assert_eq!(Family::of("c7i.xlarge", &c).unwrap(), Family::CpuX86);
        assert_eq!(Family::of("c7g.xlarge", &c).unwrap(), Family::CpuGraviton);
        assert_eq!(Family::of("m7gd.2xlarge", &c).unwrap(), Family::CpuGraviton);
        assert_eq!(Family::of("m7i.large", &c).unwrap(), Family::CpuX86);
        assert_eq!(Family::of("g6e.xlarge", &c).unwrap(), Family::Nvidia);
        assert_eq!(Family::of("p5.48xlarge", &c).unwrap(), Family::Nvidia);
        assert_eq!(Family::of("trn1.2xlarge", &c).unwrap(), Family::Neuron);
        assert!(Family::of("inf1.xlarge", &c).is_err());
        assert_eq!(Family::parse("cpu-graviton").unwrap(), Family::CpuGraviton);
        assert!(Family::parse("tpu").unwrap_err().to_string().contains("cpu-x86"));
    }

    #[test]
    fn worst_case_is_priced_from_the_catalog_and_bounded() {
        let o = options();
        let p = plan(&o, &Catalog::builtin()).unwrap();
        // 0.1785 + 1.006 + 0.7582 for one hour.
        assert!((p.worst_case_usd - 1.9427).abs() < 1e-9, "{}", p.worst_case_usd);
        let text = p.describe();
        assert!(text.contains("g5.xlarge") && text.contains("1.94") && text.contains("catalog"), "{text}");
        let mut tight = o.clone();
        tight.max_spend_usd = 1.0;
        let e = plan(&tight, &Catalog::builtin()).unwrap_err().to_string();
        assert!(e.contains("1.94") && e.contains("--max-spend"), "{e}");
        let mut long = o.clone();
        long.max_minutes = 180;
        assert!(plan(&long, &Catalog::builtin()).unwrap_err().to_string().contains("5.83"));
    }

    #[test]
    fn unknown_types_need_a_price_and_pass_it_to_the_bench() {
        let mut o = options();
        o.instance_types = vec!["c7g.xlarge".into()];
        let e = plan(&o, &Catalog::builtin()).unwrap_err().to_string();
        assert!(e.contains("--price c7g.xlarge="), "{e}");
        o.prices.insert("c7g.xlarge".into(), 0.145);
        let p = plan(&o, &Catalog::builtin()).unwrap();
        assert_eq!(p.instances[0].family, Family::CpuGraviton);
        assert!(p.instances[0].spec.user_data.contains("--price-per-hour 0.145"));
        assert!(p.instances[0].spec.user_data.contains("s3://accelrt-bin/cpu-graviton/accelrt"));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let c = Catalog::builtin();
        type Change = Box<dyn Fn(&mut FleetOptions)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|o| o.instance_types.clear()), "at least one"),
            (Box::new(|o| o.instance_types = vec!["c7i.xlarge".into(), "c7i.xlarge".into()]), "twice"),
            (Box::new(|o| o.instance_types = vec!["c7i xlarge".into()]), "not an instance type"),
            (Box::new(|o| o.model = "../etc".into()), "--model"),
            (Box::new(|o| o.bucket = "Bad_Bucket".into()), "bucket"),
            (Box::new(|o| o.prefix = "a/../b".into()), "--prefix"),
            (Box::new(|o| o.max_minutes = 5), "--max-minutes"),
            (Box::new(|o| o.max_spend_usd = f64::NAN), "--max-spend"),
            (Box::new(|o| o.tags = vec![("aws:x".into(), "y".into())]), "aws:"),
            (Box::new(|o| o.bench_args = vec!["a\nb".into()]), "control"),
            (
                Box::new(|o| {
                    o.amis.remove(&Family::Nvidia);
                }),
                "--ami nvidia=",
            ),
            (
                Box::new(|o| {
                    o.binaries.remove(&Family::Neuron);
                }),
                "--binary neuron=",
            ),
            (Box::new(|o| o.binaries.get_mut(&Family::CpuX86).unwrap().sha256 = "xyz".into()), "64 lower-case hex"),
            (Box::new(|o| o.binaries.get_mut(&Family::CpuX86).unwrap().url = "https://x/y".into()), "s3://"),
            (
                Box::new(|o| {
                    o.amis.insert(Family::CpuX86, "ubuntu".into());
                }),
                "AMI id",
            ),
        ];
        for (change, want) in cases {
            let mut o = options();
            change(&mut o);
            let e = plan(&o, &c).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn user_data_guards_and_quotes() {
        let mut o = options();
        o.bench_args = vec!["--scenario".into(), "offline,server".into(), "it's".into()];
        o.market = Market::Spot;
        let p = plan(&o, &Catalog::builtin()).unwrap();
        let g5 = &p.instances[1];
        assert_eq!(g5.spec.spot_max_price, Some(1.006));
        let ud = &g5.spec.user_data;
        assert!(ud.starts_with("#cloud-config\n"));
        assert!(ud.contains("shutdown -h +60"), "{ud}");
        assert!(ud.contains("--backend cuda:0") && ud.contains("--imds"));
        assert!(ud.contains(r"'it'\''s'"), "{ud}");
        assert!(ud.contains("s3://accelrt-results/fleet/20261129T233000Z-abcdef/g5.xlarge"));
        assert!(ud.contains("nvidia-driver-580-server-open"));
        assert!(p.instances[2].spec.user_data.contains("--backend neuron:0"));
        assert!(g5.spec.tags.iter().any(|(k, v)| k == "accelrt:fleet-run" && v == "20261129T233000Z-abcdef"));
    }

    #[test]
    fn run_ids_are_time_and_random() {
        let a = new_run_id();
        assert_eq!(a.len(), "20261129T233000Z-abcdef".len(), "{a}");
        assert_ne!(a, new_run_id());
    }
}
