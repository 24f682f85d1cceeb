//! `meshrpc bench --plot/--hgrm` and `meshrpc bench-plot`: the files are written, the SVG
//! draws one curve per run, and the .hgrm file is HdrHistogram's percentile format with
//! every call counted.

use crate::support;

use std::process::Command;

use support::{NodeProc, BIN};

/// How many curves an SVG draws: series are the 2-pixel lines, one colour each (the grid
/// is thinner; a legend entry repeats its curve's colour).
fn curves(svg: &str) -> usize {
    let colours: std::collections::BTreeSet<&str> = svg
        .split("<polyline")
        .skip(1)
        .filter(|line| line.contains("stroke-width=\"2\""))
        .filter_map(|line| line.split("stroke=\"").nth(1)?.split('"').next())
        .collect();
    colours.len()
}

#[test]
fn bench_writes_a_percentile_plot_and_an_hgrm_file_and_compares_runs() {
    let node = NodeProc::start("plots", &[]);
    let dir = std::env::temp_dir().join(format!("meshrpc-plots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (svg, hgrm) = (dir.join("run.svg"), dir.join("run.hgrm"));
    let mut reports = Vec::new();
    for (i, concurrency) in ["1", "8"].into_iter().enumerate() {
        let mut bench = Command::new(BIN);
        bench.args([
            "bench",
            &node.addr,
            "--calls",
            "2000",
            "--concurrency",
            concurrency,
            "--json",
        ]);
        if i == 0 {
            bench.arg("--plot").arg(&svg).arg("--hgrm").arg(&hgrm);
        }
        let out = bench.output().expect("run meshrpc bench");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join(format!("c{concurrency}.json"));
        std::fs::write(&path, &out.stdout).expect("write the report");
        reports.push(path);
    }
    let plot = std::fs::read_to_string(&svg).expect("the plot");
    assert!(
        plot.starts_with("<svg") && plot.contains("latency by percentile"),
        "{plot}"
    );
    assert_eq!(curves(&plot), 1, "one curve per run");
    let hgrm = std::fs::read_to_string(&hgrm).expect("the .hgrm");
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(hgrm.contains("Total count    =         2000]"), "{hgrm}");

    let compared = dir.join("compare.svg");
    let out = Command::new(BIN)
        .arg("bench-plot")
        .args(&reports)
        .arg("-o")
        .arg(&compared)
        .output()
        .expect("run meshrpc bench-plot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plot = std::fs::read_to_string(&compared).expect("the comparison");
    assert_eq!(curves(&plot), 2, "two runs, two curves");
    assert!(
        plot.contains("\nc1\n") && plot.contains("\nc8\n"),
        "each run labelled by its file"
    );

    // Not a bench result: a clear error, no file.
    let bogus = dir.join("bogus.json");
    std::fs::write(&bogus, "{\"calls\": \"many\"}").expect("write");
    let out = Command::new(BIN)
        .args(["bench-plot"])
        .arg(&bogus)
        .arg("-o")
        .arg(dir.join("none.svg"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a `meshrpc bench --json` result"));
    let _ = std::fs::remove_dir_all(&dir);
}
