//! The header of a CSV file into a [`Schema`]: which column holds the GPU's identity, the
//! time, the model, and whether rows are *long* (one metric per row, DCGM export) or *wide*
//! (one GPU per row, one column per metric, nvidia-smi `--query-gpu`).
//!
//! Headers are matched case-insensitively after trimming and after dropping a trailing unit
//! in brackets (`memory.used [MiB]` is `memory.used`). The first column that matches a role
//! takes it; later ones are ordinary columns. `spec/telemetry.md` lists the rules.

use std::fmt;

/// What a column is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The row's own time, kept as `source_timestamp`.
    Time,
    /// The GPU UUID.
    Uuid,
    /// The host name.
    Hostname,
    /// The GPU index on its host.
    GpuIndex,
    /// The device name (`nvidia0`).
    Device,
    /// The GPU model.
    Model,
    /// Long layout: the metric's name.
    MetricName,
    /// Long layout: the metric's value.
    Value,
    /// Long layout: the `labels_raw` cell.
    Labels,
    /// Anything else: a metric (wide layout, numeric cell) or an attribute.
    Field,
}

/// One column of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The header as written, trimmed.
    pub header: String,
    /// What the column is for.
    pub role: Role,
    /// The attribute key of its cells: the header without its unit, as written.
    pub attribute: String,
    /// The metric name of its numeric cells (wide layout): a dcgm-exporter name for a known
    /// nvidia-smi field, else the sanitized header.
    pub metric: String,
}

/// How rows carry metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One metric per row: `metric_name` and `value` columns (dcgm-exporter CSV export).
    Long,
    /// One GPU per row, one column per metric (nvidia-smi `--query-gpu --format=csv`).
    Wide,
}

/// What a header says about its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Every column, in file order.
    pub columns: Vec<Column>,
    /// Long or wide.
    pub layout: Layout,
    /// Column index per role (`None` if no column has it).
    pub time: Option<usize>,
    /// See [`Role::Uuid`].
    pub uuid: Option<usize>,
    /// See [`Role::Hostname`].
    pub hostname: Option<usize>,
    /// See [`Role::GpuIndex`].
    pub gpu_index: Option<usize>,
    /// See [`Role::Device`].
    pub device: Option<usize>,
    /// See [`Role::Model`].
    pub model: Option<usize>,
    /// See [`Role::MetricName`] (long layout only).
    pub metric_name: Option<usize>,
    /// See [`Role::Value`] (long layout only).
    pub value: Option<usize>,
    /// See [`Role::Labels`] (long layout only).
    pub labels: Option<usize>,
}

/// Why a header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    /// The header has no non-blank column.
    NoColumns,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::NoColumns => f.write_str("the header row has no column names"),
        }
    }
}

impl std::error::Error for SchemaError {}

/// nvidia-smi query fields and the dcgm-exporter names they map to.
const NVIDIA_SMI_METRICS: [(&str, &str); 17] = [
    ("utilization.gpu", "DCGM_FI_DEV_GPU_UTIL"),
    ("utilization.memory", "DCGM_FI_DEV_MEM_COPY_UTIL"),
    ("temperature.gpu", "DCGM_FI_DEV_GPU_TEMP"),
    ("temperature.memory", "DCGM_FI_DEV_MEMORY_TEMP"),
    ("power.draw", "DCGM_FI_DEV_POWER_USAGE"),
    ("memory.used", "DCGM_FI_DEV_FB_USED"),
    ("memory.free", "DCGM_FI_DEV_FB_FREE"),
    ("memory.total", "DCGM_FI_DEV_FB_TOTAL"),
    ("clocks.sm", "DCGM_FI_DEV_SM_CLOCK"),
    ("clocks.current.sm", "DCGM_FI_DEV_SM_CLOCK"),
    ("clocks.mem", "DCGM_FI_DEV_MEM_CLOCK"),
    ("clocks.current.memory", "DCGM_FI_DEV_MEM_CLOCK"),
    ("fan.speed", "DCGM_FI_DEV_FAN_SPEED"),
    ("pcie.link.gen.current", "DCGM_FI_DEV_PCIE_LINK_GEN"),
    ("enforced.power.limit", "DCGM_FI_DEV_POWER_MGMT_LIMIT"),
    ("power.limit", "DCGM_FI_DEV_POWER_MGMT_LIMIT"),
    ("power.draw.instant", "DCGM_FI_DEV_POWER_USAGE"),
];

impl Schema {
    /// Reads a header row (cells already trimmed or not).
    ///
    /// # Errors
    /// [`SchemaError::NoColumns`] if every header cell is blank.
    pub fn from_header<S: AsRef<str>>(header: &[S]) -> Result<Schema, SchemaError> {
        let names: Vec<String> = header.iter().map(|h| h.as_ref().trim().to_string()).collect();
        if names.iter().all(String::is_empty) {
            return Err(SchemaError::NoColumns);
        }
        let keys: Vec<String> = names.iter().map(|h| strip_unit(h).to_ascii_lowercase()).collect();
        let find = |pred: &dyn Fn(&str) -> bool| keys.iter().position(|k| pred(k));
        let metric_name = find(&|k| k == "metric_name");
        let value = find(&|k| k == "value");
        let layout =
            if metric_name.is_some() && value.is_some() { Layout::Long } else { Layout::Wide };
        let (metric_name, value) = match layout {
            Layout::Long => (metric_name, value),
            Layout::Wide => (None, None),
        };
        let labels = match layout {
            Layout::Long => find(&|k| k == "labels_raw").or_else(|| find(&|k| k == "labels")),
            Layout::Wide => None,
        };
        let mut schema = Schema {
            columns: Vec::new(),
            layout,
            time: find(&|k| k == "timestamp")
                .or_else(|| find(&|k| k.contains("timestamp")))
                .or_else(|| find(&|k| k == "time"))
                .or_else(|| find(&|k| k.contains("time"))),
            uuid: find(&|k| k == "uuid").or_else(|| find(&|k| k.contains("uuid"))),
            hostname: find(&|k| k == "hostname").or_else(|| find(&|k| k == "host")),
            gpu_index: find(&|k| matches!(k, "gpu_id" | "gpu" | "index" | "gpu_index")),
            device: find(&|k| k == "device"),
            model: find(&|k| k == "modelname")
                .or_else(|| find(&|k| k == "model"))
                .or_else(|| find(&|k| k == "name")),
            metric_name,
            value,
            labels,
        };
        schema.columns = names
            .iter()
            .enumerate()
            .map(|(i, header)| Column {
                header: header.clone(),
                role: schema.role_of(i),
                attribute: strip_unit(header).to_string(),
                metric: metric_name_for(header),
            })
            .collect();
        Ok(schema)
    }

    fn role_of(&self, i: usize) -> Role {
        let roles = [
            (self.time, Role::Time),
            (self.uuid, Role::Uuid),
            (self.hostname, Role::Hostname),
            (self.gpu_index, Role::GpuIndex),
            (self.device, Role::Device),
            (self.model, Role::Model),
            (self.metric_name, Role::MetricName),
            (self.value, Role::Value),
            (self.labels, Role::Labels),
        ];
        roles.iter().find(|(at, _)| *at == Some(i)).map_or(Role::Field, |&(_, role)| role)
    }

    /// Whether rows can carry a GPU identity at all: a UUID column, or host name and GPU
    /// index columns.
    pub fn has_identity(&self) -> bool {
        self.uuid.is_some() || (self.hostname.is_some() && self.gpu_index.is_some())
    }
}

/// The header without a trailing unit in brackets: `memory.used [MiB]` → `memory.used`.
pub fn strip_unit(header: &str) -> &str {
    let header = header.trim();
    match header.rfind(" [") {
        Some(at) if header.ends_with(']') => header[..at].trim_end(),
        _ => header,
    }
}

/// The metric name of a wide-layout column: the dcgm-exporter name of a known nvidia-smi
/// field, a `DCGM_FI_*` header unchanged, else the lower-case header without its unit with
/// every byte outside `[A-Za-z0-9_]` replaced by `_`.
pub fn metric_name_for(header: &str) -> String {
    let key = strip_unit(header).to_ascii_lowercase();
    if let Some((_, dcgm)) = NVIDIA_SMI_METRICS.iter().find(|(field, _)| *field == key) {
        return dcgm.to_string();
    }
    let stripped = strip_unit(header);
    if key.starts_with("dcgm_fi_") {
        return stripped.to_ascii_uppercase();
    }
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DCGM: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,\
                        pod,namespace,value,labels_raw";
    const SMI: &str = "timestamp, name, pci.bus_id, driver_version, pstate, index, uuid, \
                       utilization.gpu [%], memory.used [MiB], temperature.gpu, power.draw [W]";

    fn header(line: &str) -> Vec<&str> {
        line.split(',').collect()
    }

    #[test]
    fn the_dcgm_export_is_long_with_every_role_found() {
        let s = Schema::from_header(&header(DCGM)).unwrap();
        assert_eq!(s.layout, Layout::Long);
        assert_eq!(
            (s.time, s.metric_name, s.gpu_index, s.device, s.uuid, s.model, s.hostname),
            (Some(0), Some(1), Some(2), Some(3), Some(4), Some(5), Some(6))
        );
        assert_eq!((s.value, s.labels), (Some(10), Some(11)));
        assert_eq!(s.columns[7].role, Role::Field);
        assert!(s.has_identity());
    }

    #[test]
    fn nvidia_smi_output_is_wide_with_units_stripped_and_names_mapped() {
        let s = Schema::from_header(&header(SMI)).unwrap();
        assert_eq!(s.layout, Layout::Wide);
        assert_eq!((s.time, s.model, s.gpu_index, s.uuid), (Some(0), Some(1), Some(5), Some(6)));
        assert_eq!(s.hostname, None);
        let metrics: Vec<&str> = s.columns[7..].iter().map(|c| c.metric.as_str()).collect();
        assert_eq!(
            metrics,
            [
                "DCGM_FI_DEV_GPU_UTIL",
                "DCGM_FI_DEV_FB_USED",
                "DCGM_FI_DEV_GPU_TEMP",
                "DCGM_FI_DEV_POWER_USAGE"
            ]
        );
        assert_eq!(s.columns[8].attribute, "memory.used");
        assert_eq!(s.columns[2].metric, "pci_bus_id");
        assert!(s.has_identity());
    }

    #[test]
    fn header_names_match_in_any_case() {
        let s = Schema::from_header(&["TIME", "HOST", "GPU", "Temperature.GPU [C]"]).unwrap();
        assert_eq!((s.time, s.hostname, s.gpu_index, s.uuid), (Some(0), Some(1), Some(2), None));
        assert!(s.has_identity());
        assert_eq!(s.columns[3].metric, "DCGM_FI_DEV_GPU_TEMP");
    }

    #[test]
    fn unknown_columns_get_sanitized_metric_names() {
        assert_eq!(
            metric_name_for("clocks_event_reasons.active [bitmask]"),
            "clocks_event_reasons_active"
        );
        assert_eq!(metric_name_for("Energy (J)"), "energy__j_");
        assert_eq!(metric_name_for("dcgm_fi_dev_xid_errors"), "DCGM_FI_DEV_XID_ERRORS");
    }

    #[test]
    fn a_blank_header_is_refused_and_no_identity_is_noticed() {
        assert_eq!(Schema::from_header(&["", " "]), Err(SchemaError::NoColumns));
        assert!(!Schema::from_header(&["a", "b"]).unwrap().has_identity());
        assert!(!Schema::from_header(&["hostname", "b"]).unwrap().has_identity());
    }
}
