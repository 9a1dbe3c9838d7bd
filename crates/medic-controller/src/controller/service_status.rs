//! The services in `medic status`, `/api/status` and `/metrics`: each machine's nominal role,
//! current role and role state (seed 001's names).

use crate::checks::Target;

/// One machine of a service now: its name, whether it is the nominal primary, its role
/// (`primary`, `standby`, `out`) and its role state.
struct MachineRole<'a> {
    machine: &'a str,
    nominal_primary: bool,
    role: &'static str,
    state: medic_topology::RoleState,
}

/// Each machine of `s` with its roles (seed 001's state names), from the recorded roles and
/// `up` (the detector's view of each machine's check).
fn machine_roles<'a>(
    s: &'a medic_topology::Service,
    obs: &medic_plan::ObservedState,
    up: &dyn Fn(&Target) -> bool,
) -> Vec<MachineRole<'a>> {
    let name = &s.name.value;
    let st = obs.services.get(name);
    let primary = st.map_or(s.primary.value.as_str(), |st| st.primary.as_str());
    let out = |m: &str| st.is_some_and(|st| st.out.contains(m));
    // Not yet seen passing `rise` checks in a row: not usable (never promoted).
    let unproven = |m: &str| st.is_some_and(|st| st.down.contains(m));
    let healthy = |m: &str| {
        up(&Target::Service {
            service: name.clone(),
            machine: m.to_owned(),
        }) && !out(m)
            && !unproven(m)
    };
    if s.active_active() {
        // Every machine serves: active, or down (failing, or taken out until it passes).
        return s
            .machines()
            .map(|m| MachineRole {
                machine: m,
                nominal_primary: m == s.primary.value,
                role: if out(m) { "out" } else { "active" },
                state: if healthy(m) {
                    medic_topology::RoleState::Active
                } else {
                    medic_topology::RoleState::Down
                },
            })
            .collect();
    }
    s.machines()
        .map(|m| {
            let standby_healthy = s.machines().any(|o| o != m && o != primary && healthy(o));
            MachineRole {
                machine: m,
                nominal_primary: m == s.primary.value,
                role: if m == primary {
                    "primary"
                } else if out(m) {
                    "out"
                } else {
                    "standby"
                },
                state: medic_topology::RoleState::of(
                    m == s.primary.value,
                    m == primary,
                    healthy(m),
                    standby_healthy,
                ),
            }
        })
        .collect()
}

/// A service's roles now: each machine's nominal role, current role and role state.
pub(super) fn service_json(
    s: &medic_topology::Service,
    obs: &medic_plan::ObservedState,
    up: &dyn Fn(&Target) -> bool,
    health_of: &dyn Fn(&Target) -> serde_json::Value,
) -> serde_json::Value {
    let name = &s.name.value;
    let st = obs.services.get(name);
    let machines: Vec<serde_json::Value> = machine_roles(s, obs, up)
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "machine": r.machine,
                "nominal": match (s.active_active(), r.nominal_primary) {
                    (true, _) => "active",
                    (false, true) => "primary",
                    (false, false) => "standby",
                },
                "role": r.role,
                "state": r.state.as_str(),
                "health": health_of(&Target::Service {
                    service: name.clone(),
                    machine: r.machine.to_owned(),
                }),
                // Its WAL position as last seen (a `postgres` check).
                "wal_bytes": st.and_then(|st| st.positions.get(r.machine)),
                "wal": st
                    .and_then(|st| st.positions.get(r.machine))
                    .map(|b| crate::pg_check::lsn(*b)),
            })
        })
        .collect();
    serde_json::json!({
        "name": name,
        "primary": st.map_or(s.primary.value.as_str(), |st| st.primary.as_str()),
        "generation": st.map_or(0, |st| st.generation),
        "machines": machines,
    })
}

/// The services' role states for `/metrics`: one series per machine and possible state, 1 for
/// the state it is in (a state set); and which machine is each service's primary.
pub(super) fn service_metrics(
    top: &medic_topology::Topology,
    obs: &medic_plan::ObservedState,
    up: &dyn Fn(&Target) -> bool,
    out: &mut String,
) {
    use medic_topology::RoleState;
    out.push_str("# HELP medic_service_role_state Each service machine's role state (seed 001's names): 1 for the one it is in.\n# TYPE medic_service_role_state gauge\n");
    let mut primaries = String::new();
    for s in top.services.iter().map(|s| &s.value) {
        for r in machine_roles(s, obs, up) {
            for state in [
                RoleState::Production,
                RoleState::ProductionAlone,
                RoleState::Standby,
                RoleState::StandbyAsProduction,
                RoleState::ProductionAsStandby,
                RoleState::Down,
                RoleState::Active,
            ] {
                out.push_str(&format!(
                    "medic_service_role_state{{service=\"{}\",machine=\"{}\",state=\"{}\"}} {}\n",
                    s.name.value,
                    r.machine,
                    state.as_str(),
                    u8::from(r.state == state)
                ));
            }
            primaries.push_str(&format!(
                "medic_service_primary{{service=\"{}\",machine=\"{}\"}} {}\n",
                s.name.value,
                r.machine,
                u8::from(r.role == "primary")
            ));
        }
    }
    out.push_str("# HELP medic_service_primary Whether the machine is its service's primary now.\n# TYPE medic_service_primary gauge\n");
    out.push_str(&primaries);
}
