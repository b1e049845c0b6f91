//! Compiles `gatehouse/events/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so no system `protoc` is needed on a fresh machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "gatehouse/events/v1/envelope.proto",
        "gatehouse/events/v1/tenancy.proto",
        "gatehouse/events/v1/identity.proto",
        "gatehouse/events/v1/oauth.proto",
        "gatehouse/events/v1/tokens.proto",
        "gatehouse/events/v1/webhooks.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
