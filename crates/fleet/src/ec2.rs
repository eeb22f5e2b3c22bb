//! The four EC2 Query API calls the fleet makes: RunInstances, DescribeInstances,
//! TerminateInstances, CreateTags (API version 2016-11-15, the current one).

use crate::aws::{aws_error, encode, Aws};
use crate::FleetError;

const VERSION: &str = "2016-11-15";

/// What to launch: one instance.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// e.g. `c7i.xlarge`.
    pub instance_type: String,
    /// The AMI.
    pub image_id: String,
    /// cloud-config text (base64-encoded here).
    pub user_data: String,
    /// The instance profile that lets the instance write its results to S3.
    pub instance_profile: String,
    /// Optional subnet; else the default VPC's default subnet.
    pub subnet_id: Option<String>,
    /// Optional security groups; else the VPC's default group.
    pub security_group_ids: Vec<String>,
    /// Spot (one-time, terminate on interruption) with this maximum price in US$/h, or on-demand.
    pub spot_max_price: Option<f64>,
    /// The root device of the AMI (`/dev/xvda` on Amazon Linux, `/dev/sda1` on Ubuntu) and its size.
    pub root_device: String,
    /// Root volume size in GiB (encrypted gp3, deleted with the instance).
    pub root_volume_gib: u32,
    /// Tags on the instance, its volumes and (spot) its request.
    pub tags: Vec<(String, String)>,
    /// Idempotency token: a retried request launches nothing twice.
    pub client_token: String,
}

/// An instance's id and state name (`pending`, `running`, `shutting-down`, `terminated`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    /// `i-…`.
    pub instance_id: String,
    /// EC2's state name.
    pub state: String,
}

/// Sends one Query API action; the XML answer's text (an error document is an error).
fn call(aws: &Aws, action: &str, params: &[(String, String)]) -> Result<String, FleetError> {
    let mut body = format!("Action={action}&Version={VERSION}");
    for (k, v) in params {
        body.push('&');
        body.push_str(&encode(k));
        body.push('=');
        body.push_str(&encode(v));
    }
    let url = format!("{}/", aws.endpoint("ec2"));
    let resp = aws.send(
        "ec2",
        action,
        "POST",
        &url,
        &[("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
        body.as_bytes(),
    )?;
    if !(200..300).contains(&resp.status) {
        return Err(aws_error("ec2", action, resp.status, &resp.body));
    }
    Ok(String::from_utf8_lossy(&resp.body).into_owned())
}

fn parse<'a>(action: &str, text: &'a str) -> Result<roxmltree::Document<'a>, FleetError> {
    roxmltree::Document::parse(text).map_err(|e| FleetError::Transport {
        service: "ec2".into(),
        action: action.into(),
        message: format!("unreadable answer: {e}"),
    })
}

fn push_tags(params: &mut Vec<(String, String)>, prefix: &str, tags: &[(String, String)]) {
    for (i, (k, v)) in tags.iter().enumerate() {
        params.push((format!("{prefix}.Tag.{}.Key", i + 1), k.clone()));
        params.push((format!("{prefix}.Tag.{}.Value", i + 1), v.clone()));
    }
}

/// Launches one instance; returns its id. The instance powers off into `terminated`
/// (InstanceInitiatedShutdownBehavior), needs IMDSv2 tokens, and is tagged at launch, with its volume.
pub fn run_instance(aws: &Aws, spec: &LaunchSpec) -> Result<String, FleetError> {
    use base64::Engine;
    let mut p: Vec<(String, String)> = vec![
        ("ImageId".into(), spec.image_id.clone()),
        ("InstanceType".into(), spec.instance_type.clone()),
        ("MinCount".into(), "1".into()),
        ("MaxCount".into(), "1".into()),
        ("ClientToken".into(), spec.client_token.clone()),
        ("UserData".into(), base64::engine::general_purpose::STANDARD.encode(&spec.user_data)),
        ("InstanceInitiatedShutdownBehavior".into(), "terminate".into()),
        ("IamInstanceProfile.Name".into(), spec.instance_profile.clone()),
        ("MetadataOptions.HttpTokens".into(), "required".into()),
        ("MetadataOptions.HttpEndpoint".into(), "enabled".into()),
        ("MetadataOptions.HttpPutResponseHopLimit".into(), "1".into()),
        ("BlockDeviceMapping.1.DeviceName".into(), spec.root_device.clone()),
        ("BlockDeviceMapping.1.Ebs.VolumeSize".into(), spec.root_volume_gib.to_string()),
        ("BlockDeviceMapping.1.Ebs.VolumeType".into(), "gp3".into()),
        ("BlockDeviceMapping.1.Ebs.Encrypted".into(), "true".into()),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination".into(), "true".into()),
    ];
    if let Some(subnet) = &spec.subnet_id {
        p.push(("SubnetId".into(), subnet.clone()));
    }
    for (i, sg) in spec.security_group_ids.iter().enumerate() {
        p.push((format!("SecurityGroupId.{}", i + 1), sg.clone()));
    }
    let mut kinds = vec!["instance", "volume"];
    if let Some(max) = spec.spot_max_price {
        p.push(("InstanceMarketOptions.MarketType".into(), "spot".into()));
        p.push(("InstanceMarketOptions.SpotOptions.SpotInstanceType".into(), "one-time".into()));
        p.push(("InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior".into(), "terminate".into()));
        p.push(("InstanceMarketOptions.SpotOptions.MaxPrice".into(), format!("{max:.4}")));
        kinds.push("spot-instances-request");
    }
    for (i, kind) in kinds.iter().enumerate() {
        let prefix = format!("TagSpecification.{}", i + 1);
        p.push((format!("{prefix}.ResourceType"), kind.to_string()));
        push_tags(&mut p, &prefix, &spec.tags);
    }
    let text = call(aws, "RunInstances", &p)?;
    let doc = parse("RunInstances", &text)?;
    doc.descendants()
        .find(|n| n.has_tag_name("instancesSet"))
        .and_then(|set| set.descendants().find(|n| n.has_tag_name("instanceId")))
        .and_then(|n| n.text())
        .map(str::to_string)
        .ok_or_else(|| FleetError::Transport {
            service: "ec2".into(),
            action: "RunInstances".into(),
            message: "the answer names no instance".into(),
        })
}

/// The states of `ids` (every page).
pub fn describe_instances(aws: &Aws, ids: &[String]) -> Result<Vec<InstanceState>, FleetError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut p: Vec<(String, String)> =
            ids.iter().enumerate().map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone())).collect();
        if let Some(t) = &token {
            p.push(("NextToken".into(), t.clone()));
        }
        let text = call(aws, "DescribeInstances", &p)?;
        let doc = parse("DescribeInstances", &text)?;
        for set in doc.descendants().filter(|n| n.has_tag_name("instancesSet")) {
            for item in set.children().filter(|n| n.has_tag_name("item")) {
                let child = |name: &str| item.children().find(|n| n.has_tag_name(name));
                let id = child("instanceId").and_then(|n| n.text()).unwrap_or_default().to_string();
                let state = child("instanceState")
                    .and_then(|s| s.children().find(|n| n.has_tag_name("name")))
                    .and_then(|n| n.text())
                    .unwrap_or_default()
                    .to_string();
                out.push(InstanceState { instance_id: id, state });
            }
        }
        token = doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("nextToken"))
            .and_then(|n| n.text())
            .map(str::to_string)
            .filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Terminates `ids` (nothing to do for an empty list).
pub fn terminate_instances(aws: &Aws, ids: &[String]) -> Result<(), FleetError> {
    if ids.is_empty() {
        return Ok(());
    }
    let p: Vec<(String, String)> =
        ids.iter().enumerate().map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone())).collect();
    call(aws, "TerminateInstances", &p).map(|_| ())
}

/// Adds tags to resources.
pub fn create_tags(aws: &Aws, ids: &[String], tags: &[(String, String)]) -> Result<(), FleetError> {
    if ids.is_empty() || tags.is_empty() {
        return Ok(());
    }
    let mut p: Vec<(String, String)> =
        ids.iter().enumerate().map(|(i, id)| (format!("ResourceId.{}", i + 1), id.clone())).collect();
    for (i, (k, v)) in tags.iter().enumerate() {
        p.push((format!("Tag.{}.Key", i + 1), k.clone()));
        p.push((format!("Tag.{}.Value", i + 1), v.clone()));
    }
    call(aws, "CreateTags", &p).map(|_| ())
}
