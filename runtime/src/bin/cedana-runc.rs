//! `cedana-runc`: drop-in runc wrapper; see `cedana_runtime::runc_wrapper`.

fn main() {
    std::process::exit(cedana_runtime::runc_wrapper::main(
        std::env::args_os().skip(1).collect(),
    ));
}
