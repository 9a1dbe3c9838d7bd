//! `provider` and `amis`: the cloud the machines live in, and the images they are launched from.

use super::*;

impl Ctx<'_, '_> {
    pub(super) fn provider(&mut self) {
        let at = self.top.provider.referenced;
        match &self.top.provider.value {
            Provider::Aws(aws) => {
                if aws.region.trim().is_empty() {
                    self.d.error(
                        at,
                        "provider.aws.region",
                        "empty; expected a region like us-east-1",
                    );
                }
                if aws.subnets.is_empty() {
                    self.d.error(
                        at,
                        "provider.aws.subnets",
                        "empty; expected at least one subnet id (subnet-...)",
                    );
                }
                for (i, s) in aws.subnets.iter().enumerate() {
                    if !s.starts_with("subnet-") {
                        self.d.error(
                            at,
                            format!("provider.aws.subnets[{i}]"),
                            format!("`{s}` is not a subnet id; expected subnet-..."),
                        );
                    }
                }
                if aws.security_groups.is_empty() {
                    self.d.error(
                        at,
                        "provider.aws.security_groups",
                        "empty; expected at least one security group id (sg-...)",
                    );
                }
                for (i, s) in aws.security_groups.iter().enumerate() {
                    if !s.starts_with("sg-") {
                        self.d.error(
                            at,
                            format!("provider.aws.security_groups[{i}]"),
                            format!("`{s}` is not a security group id; expected sg-..."),
                        );
                    }
                }
                if aws.key_pair.trim().is_empty() {
                    self.d.error(
                        at,
                        "provider.aws.key_pair",
                        "empty; expected the name of an EC2 key pair",
                    );
                }
                for k in aws.tags.keys() {
                    if k.starts_with("medic:") || k.starts_with("aws:") {
                        self.d.error(at, format!("provider.aws.tags.{k}"), "tag keys starting with `medic:` or `aws:` are reserved; expected another key");
                    }
                }
            }
            Provider::Local(local) => {
                if parse_lab_subnet(&local.subnet).is_none() {
                    self.d.error(
                        at,
                        "provider.local.subnet",
                        format!("`{}` is not a private /24; expected a network like 10.77.0.0/24 (10/8, 172.16/12 or 192.168/16)", local.subnet),
                    );
                }
                if local.bridge.is_empty() || local.bridge.len() > 15 {
                    self.d.error(
                        at,
                        "provider.local.bridge",
                        format!(
                            "`{}` is not a valid interface name; expected 1 to 15 characters",
                            local.bridge
                        ),
                    );
                }
            }
            Provider::Static => {}
        }
    }

    pub(super) fn amis(&mut self) {
        self.duplicates(
            self.top
                .amis
                .iter()
                .enumerate()
                .map(|(i, a)| (&a.value.name, format!("amis[{i}].name"))),
            "AMI",
        );
        for (i, a) in self.top.amis.iter().enumerate() {
            check_name(self.d, &a.value.name, &format!("amis[{i}].name"));
            for (region, id) in &a.value.image_ids {
                if !is_ami_id(&id.value) {
                    self.d.error(
                        id.referenced,
                        format!("amis[{i}].image_ids.{region}"),
                        format!(
                            "`{}` is not an AMI id; expected ami- and 8 or 17 hex digits",
                            id.value
                        ),
                    );
                }
            }
        }
    }
}
