pub async fn run(_a: crate::BenchArgs, _c: switchboard_core::Ctx) -> crate::Result<()> {
    Ok(())
}
