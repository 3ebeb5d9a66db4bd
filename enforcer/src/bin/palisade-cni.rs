//! palisade-cni: the CNI plugin (see `palisade_enforcer::cni`).

fn main() {
    std::process::exit(palisade_enforcer::cni::run_plugin());
}
