//! Build-time facts the binary reports: `VEER_BUILD_DATE` (`YYYY/MM/DD`, what `show info`
//! says as `Release_date`), from `SOURCE_DATE_EPOCH` when set (reproducible builds), else
//! the time this script first ran.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap_or_else(std::time::SystemTime::now);
    let date = humantime::format_rfc3339_seconds(when).to_string();
    println!(
        "cargo:rustc-env=VEER_BUILD_DATE={}",
        date.get(..10).unwrap_or("").replace('-', "/")
    );
}
