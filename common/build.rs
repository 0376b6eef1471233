//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, a
//! change to the migrations alone would not rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
