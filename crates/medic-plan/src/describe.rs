//! Steps in words: what `medic plan` prints. Built from the same `Step` values the executor runs.

use serde::Serialize;

use medic_playbook::{Playbooks, RenderedAction, human_ms as ms};

use crate::step::{Action, AlertLevel, DnsTarget, Step};

/// One step as printed: a title, the target, and the exact commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepView {
    pub index: usize,
    pub kind: &'static str,
    pub target: String,
    pub summary: String,
    pub commands: Vec<String>,
    /// Files a playbook step writes, with their rendered content.
    pub files: Vec<RenderedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedFile {
    pub path: String,
    pub mode: u32,
    pub content: String,
}

/// Renders a step. Playbook steps are rendered with their variables; addresses not known yet
/// stay as `${address:MACHINE}`.
pub fn describe(step: &Step, playbooks: &Playbooks) -> StepView {
    describe_as(step, playbooks, &medic_haproxy::Aliases::default())
}

/// [`describe`], with HAProxy's runtime commands naming the servers as HAProxy does
/// (`aliases`: the topology's `machines[].server`), as the executor sends them.
pub fn describe_as(
    step: &Step,
    playbooks: &Playbooks,
    aliases: &medic_haproxy::Aliases,
) -> StepView {
    let a = &step.action;
    let mut files = Vec::new();
    let (target, summary, mut commands): (String, String, Vec<String>) = match a {
        Action::Unmonitor { target } => (target.to_string(), "stop health checks".into(), vec![]),
        Action::Monitor { target } => (target.to_string(), "resume health checks".into(), vec![]),
        Action::FenceServer { proxy, server, .. } => (
            format!("{server} on {}", proxy.machine),
            "take the server out of the proxy and cut its clients off".into(),
            vec![],
        ),
        Action::ActivateServer { proxy, server } => (
            format!("{server} on {}", proxy.machine),
            "send traffic to the server".into(),
            vec![],
        ),
        Action::SetServerAddress {
            proxy,
            server,
            address,
            port,
        } => (
            format!("{server} on {}", proxy.machine),
            format!("point the server at {address}:{port}"),
            vec![],
        ),
        Action::PersistProxyConfig { proxy, servers } => (
            format!("haproxy.cfg on {}", proxy.machine),
            "keep the changes above across a reload or a restart".into(),
            vec![format!(
                "ssh {}: read /etc/haproxy/haproxy.cfg, write it back with {}",
                proxy.machine,
                servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        ),
        Action::PromoteReplica {
            server,
            offset,
            lag_bytes,
        } => (
            format!("{}@{}", server.shard, server.machine),
            format!(
                "promote to master (offset {offset}, {lag_bytes} bytes behind the newest data seen)"
            ),
            vec![],
        ),
        Action::ReplicaOf {
            server,
            master,
            master_port,
        } => (
            format!("{}@{}", server.shard, server.machine),
            format!("replicate {master}:{master_port}"),
            vec![],
        ),
        Action::WaitInSync {
            server,
            master,
            master_port,
            timeout_ms,
        } => (
            format!("{}@{}", server.shard, server.machine),
            format!(
                "wait until in sync with {master}:{master_port} (up to {})",
                ms(*timeout_ms)
            ),
            vec![],
        ),
        Action::PauseWrites { server, timeout_ms } => (
            format!("{}@{}", server.shard, server.machine),
            format!(
                "hold its clients' writes (reads go on; lifted by redis after {})",
                ms(*timeout_ms)
            ),
            vec![],
        ),
        Action::Unpause { server } => (
            format!("{}@{}", server.shard, server.machine),
            "let held writes go on (a replica now: they get READONLY)".into(),
            vec![],
        ),
        Action::FenceAtSource {
            machine,
            instance_id,
        } => {
            let id = instance_label(instance_id.as_deref());
            (
                machine.clone(),
                "only if a proxy above could not be fenced: terminate the instance before any promotion, and wait until it is gone".into(),
                vec![
                    format!("ec2 TerminateInstances InstanceIds=[{id}]"),
                    format!("ec2 DescribeInstances InstanceIds=[{id}]  (until terminated)"),
                ],
            )
        }
        Action::TerminateInstance {
            machine,
            instance_id,
        } => {
            let id = instance_label(instance_id.as_deref());
            (
                machine.clone(),
                "terminate the instance (already gone is fine)".into(),
                vec![format!("ec2 TerminateInstances InstanceIds=[{id}]")],
            )
        }
        Action::LaunchInstance { spec } => {
            let mut c = Vec::new();
            if spec.from_spares {
                c.push(format!(
                    "take a ready spare: instances tagged medic:topology={}, medic:spare={}, medic:spare-ready=yes (the first by id); set its tags below, remove medic:spare and medic:spare-ready, read them back, start it if stopped",
                    spec.tags.get("medic:topology").map_or("", String::as_str),
                    spec.role.as_str()
                ));
                c.push("  if there is none, launch:".to_owned());
            }
            c.extend(launch_commands(spec));
            (
                spec.machine.clone(),
                format!(
                    "{} a {} machine from AMI `{}`",
                    if spec.from_spares {
                        "take a spare, else launch"
                    } else {
                        "launch"
                    },
                    spec.role.as_str(),
                    spec.ami
                ),
                c,
            )
        }
        Action::PrepareSpare {
            spec,
            like: _,
            playbook,
            vars,
            stop,
            timeout_ms,
        } => {
            let mut c = launch_commands(spec);
            c.push(format!(
                "wait until SSH answers at {} (up to {})",
                crate::Addr::Of(spec.machine.clone()),
                ms(*timeout_ms)
            ));
            c.push(format!(
                "ssh: the steps of playbook `{playbook}` marked spare:"
            ));
            c.extend(
                render_spare(playbooks, playbook, vars, &mut files)
                    .into_iter()
                    .map(|l| format!("  {l}")),
            );
            if *stop {
                c.push("ec2 StopInstances (policy.spare_state: stopped)".to_owned());
            }
            c.push("ec2 CreateTags medic:spare-ready=yes".to_owned());
            (
                spec.machine.clone(),
                format!(
                    "prepare a spare {} machine from AMI `{}`{}",
                    spec.role.as_str(),
                    spec.ami,
                    if *stop { ", left stopped" } else { "" }
                ),
                c,
            )
        }
        Action::WaitReachable {
            machine,
            address,
            port,
            timeout_ms,
        } => (
            machine.clone(),
            format!(
                "wait until SSH answers at {address}:{port} (up to {})",
                ms(*timeout_ms)
            ),
            vec![],
        ),
        Action::RunPlaybook {
            machine,
            address,
            playbook,
            vars,
        } => {
            let c = render(playbooks, playbook, vars, &mut files);
            (
                machine.clone(),
                format!("ssh {address}: run playbook `{playbook}`"),
                c,
            )
        }
        Action::RunHook {
            service,
            hook,
            machine,
            address,
            playbook,
            vars,
            skip_unreachable,
        } => {
            let c = render(playbooks, playbook, vars, &mut files);
            let skip = if *skip_unreachable {
                " (skipped if the machine cannot be reached)"
            } else {
                ""
            };
            (
                format!("{service}@{machine}"),
                format!("ssh {address}: run {hook} hook `{playbook}`{skip}"),
                c,
            )
        }
        Action::ServiceAddress {
            service,
            machine,
            address,
            ip,
            up,
            skip_unreachable,
            ..
        } => (
            format!("{service}@{machine}"),
            format!(
                "ssh {address}: {} the service address {ip}{}",
                if *up { "bring up" } else { "take down" },
                if *skip_unreachable {
                    " (skipped if the machine cannot be reached)"
                } else {
                    ""
                }
            ),
            a.address_command()
                .map(|c| format!("$ {c}"))
                .into_iter()
                .collect(),
        ),
        Action::CloudAddress {
            service,
            machine,
            instance_id,
            ip,
            elastic_ip,
            up: false,
        } => {
            let id = instance_label(instance_id.as_deref());
            let mut c = vec![format!(
                "ec2 DescribeInstances InstanceIds=[{id}]  (its primary network interface, ENI; an instance gone holds nothing)"
            )];
            if let Some(e) = elastic_ip {
                c.push(format!(
                    "ec2 DescribeAddresses AllocationIds=[{e}]; ec2 DisassociateAddress AssociationId=<its association>  (if it is on <ENI>; read back)"
                ));
            }
            c.push(format!(
                "ec2 UnassignPrivateIpAddresses NetworkInterfaceId=<ENI> PrivateIpAddresses=[{ip}]  (if it holds it)"
            ));
            c.push(format!(
                "ec2 DescribeNetworkInterfaces Filters=[vpc-id]  (read back: {ip} not on <ENI>)"
            ));
            (
                format!("{service}@{machine}"),
                format!(
                    "take the service address {ip}{} from the instance",
                    elastic_ip
                        .as_ref()
                        .map(|e| format!(" and Elastic IP {e}"))
                        .unwrap_or_default()
                ),
                c,
            )
        }
        Action::CloudAddress {
            service,
            machine,
            instance_id,
            ip,
            elastic_ip,
            up: true,
        } => {
            let id = instance_label(instance_id.as_deref());
            let mut c = vec![
                format!(
                    "ec2 DescribeInstances InstanceIds=[{id}]  (its primary network interface, ENI)"
                ),
                format!(
                    "ec2 DescribeNetworkInterfaces Filters=[vpc-id]  (which interfaces hold {ip}: nothing more if <ENI> alone)"
                ),
                format!(
                    "ec2 AssignPrivateIpAddresses NetworkInterfaceId=<ENI> PrivateIpAddresses=[{ip}] AllowReassignment=true"
                ),
                format!(
                    "ec2 UnassignPrivateIpAddresses PrivateIpAddresses=[{ip}]  (on any other interface that held it)"
                ),
            ];
            if let Some(e) = elastic_ip {
                c.push(format!("ec2 AssociateAddress AllocationId={e} NetworkInterfaceId=<ENI> PrivateIpAddress={ip} AllowReassociation=true"));
            }
            c.push(format!(
                "ec2 DescribeNetworkInterfaces Filters=[vpc-id]  (read back: {ip} on <ENI> alone){}",
                if elastic_ip.is_some() { "; ec2 DescribeAddresses" } else { "" }
            ));
            (
                format!("{service}@{machine}"),
                format!(
                    "move the service address {ip}{} to the instance",
                    elastic_ip
                        .as_ref()
                        .map(|e| format!(" and Elastic IP {e}"))
                        .unwrap_or_default()
                ),
                c,
            )
        }
        Action::PromotePostgres { .. }
        | Action::FollowPostgres { .. }
        | Action::StopPostgres { .. }
        | Action::RejoinPostgres { .. }
        | Action::StartPostgres { .. } => crate::describe_pg::postgres(a),
        Action::ServiceRole {
            service,
            machine,
            role,
        } => (
            format!("{service}@{machine}"),
            match role {
                crate::ServiceRole::Primary => {
                    "record it as the service's primary (the old one is out until it rejoins)"
                        .into()
                }
                crate::ServiceRole::Standby => "record it as a standby of the service".into(),
                crate::ServiceRole::Out => {
                    "record it as out of the service until it answers and rejoins".into()
                }
                crate::ServiceRole::Inactive => {
                    "record it as out of the service until it passes its checks again".into()
                }
                crate::ServiceRole::Active => {
                    "record it as serving beside the service's other machines".into()
                }
            },
            vec![],
        ),
        Action::UpsertDns {
            target,
            name,
            ttl,
            values,
        } => {
            let values: Vec<String> = values.iter().map(ToString::to_string).collect();
            let c = match target {
                DnsTarget::Route53 { zone_id, .. } => vec![
                    format!(
                        "route53 ChangeResourceRecordSets HostedZoneId={zone_id} UPSERT {name}. A TTL={ttl} [{}]",
                        values.join(", ")
                    ),
                    "route53 GetChange until INSYNC".to_owned(),
                ],
                DnsTarget::Rfc2136 {
                    server,
                    zone,
                    tsig_key,
                } => vec![format!(
                    "dns UPDATE zone {zone} at {server} (TSIG {tsig_key}): replace {name}. A TTL={ttl} [{}]",
                    values.join(", ")
                )],
            };
            (name.clone(), "update the DNS record".into(), c)
        }
        Action::FailoverDns {
            target,
            name,
            ttl,
            primary,
            secondary,
            http_path,
            https,
            server_name,
            port,
            owner,
        } => {
            let zone = match target {
                DnsTarget::Route53 { zone_id, .. } => zone_id.clone(),
                DnsTarget::Rfc2136 { zone, .. } => zone.clone(),
            };
            let check = match (http_path, server_name) {
                (Some(p), Some(n)) if *https => format!("HTTPS {p} port {port}, SNI {n}"),
                (Some(p), None) if *https => format!("HTTPS {p} port {port}"),
                (Some(p), _) => format!("HTTP {p} port {port}"),
                (None, _) => format!("TCP port {port}"),
            };
            (
                name.clone(),
                "point the failover record sets at the primary and a standby".into(),
                vec![
                    format!(
                        "route53 ListHealthChecks; CreateHealthCheck CallerReference={owner}:ADDRESS:{port} ({check}) for {primary} and {secondary} where there is none"
                    ),
                    format!(
                        "route53 ChangeResourceRecordSets HostedZoneId={zone} UPSERT {name}. A TTL={ttl} Failover=PRIMARY SetIdentifier={owner}:primary [{primary}], Failover=SECONDARY SetIdentifier={owner}:secondary [{secondary}], each with its HealthCheckId"
                    ),
                    format!(
                        "route53 DeleteHealthCheck for {owner}'s checks of other addresses; GetChange until INSYNC"
                    ),
                ],
            )
        }
        Action::Alert { level, message } => (
            match level {
                AlertLevel::Critical => "CRITICAL".into(),
                AlertLevel::Warning => "warning".into(),
            },
            message.clone(),
            vec!["notify: webhooks, log, status page".into()],
        ),
    };
    let proxy = match a {
        Action::FenceServer { proxy, .. }
        | Action::ActivateServer { proxy, .. }
        | Action::SetServerAddress { proxy, .. } => {
            Some(format!("haproxy {}> ", proxy.at(&proxy.address)))
        }
        _ => None,
    };
    if let Some(prefix) = proxy {
        commands.extend(
            a.haproxy_commands(aliases)
                .into_iter()
                .map(|c| format!("{prefix}{c}")),
        );
    }
    if let Action::PromoteReplica { server, .. }
    | Action::ReplicaOf { server, .. }
    | Action::WaitInSync { server, .. }
    | Action::PauseWrites { server, .. }
    | Action::Unpause { server } = a
    {
        commands.extend(
            a.redis_commands()
                .into_iter()
                .map(|c| format!("redis {}:{}> {c}", server.address, server.port)),
        );
    }
    StepView {
        index: step.index,
        kind: a.kind(),
        target,
        summary,
        commands,
        files,
    }
}

/// A playbook's steps as `medic plan` prints them; its files are added to `files`.
/// How an instance is launched: the lookup of one this step launched, then RunInstances (or
/// the lab's launch), and its tags.
fn launch_commands(spec: &crate::LaunchSpec) -> Vec<String> {
    let mut c = Vec::new();
    match &spec.image_id {
        Some(image) => {
            let (first, rest) = spec
                .instance_types
                .split_first()
                .map_or(("?", &[][..]), |(f, r)| (f.as_str(), r));
            c.push(format!(
                        "ec2 DescribeInstances Filters=[tag:medic:recovery={}, tag:medic:step={}, instance-state-name=pending|running]  (reuse an instance this step already launched)",
                        spec.tags.get("medic:recovery").map_or("", String::as_str),
                        spec.tags.get("medic:step").map_or("", String::as_str)
                    ));
            c.push(format!(
                        "ec2 RunInstances ImageId={image} InstanceType={first} MinCount=1 MaxCount=1 SubnetId={} SecurityGroupIds=[{}] KeyName={}{} MetadataOptions.HttpTokens=required ClientToken={}",
                        spec.subnet.as_deref().unwrap_or("?"),
                        spec.security_groups.join(","),
                        spec.key_pair.as_deref().unwrap_or("?"),
                        spec.instance_profile.as_ref().map(|p| format!(" IamInstanceProfile.Name={p}")).unwrap_or_default(),
                        spec.client_token
                    ));
            if !rest.is_empty() {
                c.push(format!(
                    "  on InsufficientInstanceCapacity, retry with InstanceType={}",
                    rest.join(", then ")
                ));
            }
        }
        None => c.push(format!(
            "lab: launch machine {} from AMI definition `{}`",
            spec.machine, spec.ami
        )),
    }
    let tags: Vec<String> = spec.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    c.push(format!("  tags {}", tags.join(" ")));
    c
}

fn render(
    playbooks: &Playbooks,
    playbook: &str,
    vars: &serde_json::Value,
    files: &mut Vec<RenderedFile>,
) -> Vec<String> {
    render_with(playbooks, playbook, vars, files, false)
}

/// The steps of a playbook marked `spare`, as a spare's preparation runs them.
fn render_spare(
    playbooks: &Playbooks,
    playbook: &str,
    vars: &serde_json::Value,
    files: &mut Vec<RenderedFile>,
) -> Vec<String> {
    render_with(playbooks, playbook, vars, files, true)
}

fn render_with(
    playbooks: &Playbooks,
    playbook: &str,
    vars: &serde_json::Value,
    files: &mut Vec<RenderedFile>,
    spare: bool,
) -> Vec<String> {
    match playbooks.get(playbook) {
        None => vec![format!("(playbook `{playbook}` is not loaded)")],
        Some(pb) => match if spare {
            pb.render_spare(vars)
        } else {
            pb.render(vars)
        } {
            Err(e) => vec![format!("(cannot render: {e})")],
            Ok(steps) => steps
                .iter()
                .inspect(|s| {
                    if let RenderedAction::File {
                        path,
                        mode,
                        content,
                    } = &s.action
                    {
                        files.push(RenderedFile {
                            path: path.clone(),
                            mode: *mode,
                            content: content.clone(),
                        });
                    }
                })
                .map(|s| match &s.action {
                    RenderedAction::File { .. } => format!("{}: {}", s.name, s.action),
                    other => format!("{}: {other}", s.name),
                })
                .collect(),
        },
    }
}

/// An instance id as a command shows it: the id, or how the step finds it when it runs.
fn instance_label(id: Option<&str>) -> String {
    id.map_or_else(
        || "<found by tags medic:topology, medic:machine>".to_owned(),
        str::to_owned,
    )
}
