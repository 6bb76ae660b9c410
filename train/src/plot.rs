//! Line plots as PNG bytes, for evaluation reports such as the guidance
//! trade-off curves (fidelity and diversity against guidance scale).
//!
//! The font is embedded in the binary rather than looked up on the system,
//! so a plot renders the same on a fresh machine with no fonts installed.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::register_font;

/// One curve of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// `(x, y)` points in drawing order; non-finite ones are skipped and
    /// break the line there.
    pub points: Vec<(f64, f64)>,
    /// Dashed rather than solid, e.g. to set a baseline apart.
    pub dashed: bool,
}

/// One chart: its own axes, title and legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// DejaVu Sans (see `assets/FONT-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Colour of series `i` in every panel, so one reading of any legend holds
/// for all panels. Saturated and mutually distinct; no greys, which would
/// be confused with the axes and grid.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),  // blue
    RGBColor(255, 127, 14),  // orange
    RGBColor(44, 160, 44),   // green
    RGBColor(214, 39, 40),   // red
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
    RGBColor(23, 190, 207),  // cyan
];

/// Below this a panel cannot hold its axes, labels and title.
const MIN_PANEL_WIDTH: u32 = 120;
const MIN_HEIGHT: u32 = 100;
/// Keeps `width × height` within the backend's u32 pixel count.
const MAX_SIDE: u32 = 16_384;

/// Colour of the series at `index`, cycling through the palette.
fn series_color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Panels side by side in one PNG; each panel has axes with tick labels, a title, and a legend.
///
/// Axis ranges follow each panel's finite data with a small margin; a
/// panel with no finite point gets the unit square. Series `i` has the same
/// colour in every panel.
pub fn plot_png(panels: &[Panel], panel_width: u32, height: u32) -> Result<Vec<u8>, String> {
    if panels.is_empty() {
        return Err("plot_png: no panels to draw".to_string());
    }
    if panel_width < MIN_PANEL_WIDTH || height < MIN_HEIGHT {
        return Err(format!(
            "plot_png: {panel_width}×{height} panels are too small \
             (at least {MIN_PANEL_WIDTH}×{MIN_HEIGHT})"
        ));
    }
    let width = u32::try_from(panels.len())
        .ok()
        .and_then(|n| n.checked_mul(panel_width))
        .filter(|&w| w <= MAX_SIDE && height <= MAX_SIDE)
        .ok_or_else(|| {
            format!(
                "plot_png: {} panels of {panel_width}×{height} exceed {MAX_SIDE} pixels a side",
                panels.len()
            )
        })?;
    register_embedded_font()?;

    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let areas = root.split_evenly((1, panels.len()));
        for (panel, area) in panels.iter().zip(&areas) {
            draw_panel(panel, area)?;
        }
        root.present().map_err(draw_error)?;
    }
    encode_png(&rgb, width, height)
}

fn register_embedded_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "plot_png: the embedded font is not a valid font".to_string())
        })
        .clone()
}

fn draw_error(e: impl std::fmt::Display) -> String {
    format!("plot_png: drawing failed: {e}")
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let finite = || {
        panel
            .series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let x_range = axis_range(finite().map(|p| p.0))?;
    let y_range = axis_range(finite().map(|p| p.1))?;
    let legend_position = emptiest_corner(finite().copied(), &x_range, &y_range);

    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, 18))
        .margin(10)
        // Room for the last x tick label, centred on the axis end.
        .margin_right(22)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range, y_range)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .x_labels(6)
        .y_labels(6)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(draw_error)?;

    for (index, series) in panel.series.iter().enumerate() {
        let color = series_color(index);
        let line = color.stroke_width(2);
        for run in finite_runs(&series.points) {
            if series.dashed {
                chart
                    .draw_series(DashedLineSeries::new(run.iter().copied(), 8, 5, line))
                    .map_err(draw_error)?;
            } else {
                chart
                    .draw_series(LineSeries::new(run.iter().copied(), line))
                    .map_err(draw_error)?;
            }
        }
        // The legend entry hangs off the markers, which exist (possibly
        // empty) even when the line has no finite run.
        let dashed = series.dashed;
        chart
            .draw_series(PointSeries::<_, _, Circle<_, _>, _>::new(
                series
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite()),
                3,
                color.filled(),
            ))
            .map_err(draw_error)?
            .label(series.label.as_str())
            .legend(move |(x, y)| {
                let ends = vec![(x, y), (x + 24, y)];
                if dashed {
                    DashedPathElement::new(ends, 6, 4, line).into_dyn()
                } else {
                    PathElement::new(ends, line).into_dyn()
                }
            });
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .position(legend_position)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Maximal runs of consecutive finite points, so a NaN gap shows as a gap
/// rather than a line bridging it.
fn finite_runs(points: &[(f64, f64)]) -> impl Iterator<Item = &[(f64, f64)]> {
    points
        .split(|(x, y)| !(x.is_finite() && y.is_finite()))
        .filter(|run| !run.is_empty())
}

/// The plot corner with the fewest data points, where the legend hides
/// the least (upper right on a tie, the usual place).
fn emptiest_corner(
    points: impl Iterator<Item = (f64, f64)>,
    x: &std::ops::Range<f64>,
    y: &std::ops::Range<f64>,
) -> SeriesLabelPosition {
    // Counts for upper right, upper left, lower right, lower left, each
    // corner taken as 45% of the axis from its end.
    let mut counts = [0usize; 4];
    for (px, py) in points {
        let u = (px - x.start) / (x.end - x.start);
        let v = (py - y.start) / (y.end - y.start);
        let (left, right, low, high) = (u < 0.45, u > 0.55, v < 0.45, v > 0.55);
        counts[0] += usize::from(right && high);
        counts[1] += usize::from(left && high);
        counts[2] += usize::from(right && low);
        counts[3] += usize::from(left && low);
    }
    match (0..4).min_by_key(|&i| counts[i]) {
        Some(1) => SeriesLabelPosition::UpperLeft,
        Some(2) => SeriesLabelPosition::LowerRight,
        Some(3) => SeriesLabelPosition::LowerLeft,
        _ => SeriesLabelPosition::UpperRight,
    }
}

/// Data range plus a 5% margin each side. A zero-width range (one point, a
/// constant series) is widened around its value, and no data at all gives
/// 0..1, so every panel has a drawable axis.
fn axis_range(values: impl Iterator<Item = f64>) -> Result<std::ops::Range<f64>, String> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return Ok(0.0..1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        1.0
    };
    let range = (lo - pad)..(hi + pad);
    if range.start.is_finite() && range.end.is_finite() && range.start < range.end {
        Ok(range)
    } else {
        Err(format!(
            "plot_png: values from {lo} to {hi} span too wide a range to draw"
        ))
    }
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| format!("plot_png: PNG encoding failed: {e}");
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoded RGB image: (width, height, pixels).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("a readable PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
        let info = reader.next_frame(&mut buf).expect("one frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Number of pixels of exactly `color` in columns `x0..x1`, rows `y0..y1`.
    fn count_color(
        image: &(u32, u32, Vec<u8>),
        (x0, x1): (u32, u32),
        (y0, y1): (u32, u32),
        color: RGBColor,
    ) -> usize {
        let (w, _, px) = image;
        let mut n = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let i = ((y * w + x) * 3) as usize;
                if px[i..i + 3] == [color.0, color.1, color.2] {
                    n += 1;
                }
            }
        }
        n
    }

    fn series(label: &str, points: &[(f64, f64)], dashed: bool) -> Series {
        Series {
            label: label.to_string(),
            points: points.to_vec(),
            dashed,
        }
    }

    fn panel(title: &str, series: Vec<Series>) -> Panel {
        Panel {
            title: title.to_string(),
            x_label: "guidance scale".to_string(),
            y_label: "accuracy".to_string(),
            series,
        }
    }

    fn curve() -> Vec<(f64, f64)> {
        vec![(0.0, 0.6), (1.0, 0.8), (2.0, 0.9), (4.0, 0.95)]
    }

    #[test]
    fn png_has_panels_times_width_by_height() {
        let panels = vec![
            panel("a", vec![series("s", &curve(), false)]),
            panel("b", vec![]),
            panel("c", vec![]),
        ];
        let image = decode(&plot_png(&panels, 200, 150).unwrap());
        assert_eq!((image.0, image.1), (600, 150));
    }

    #[test]
    fn series_colour_only_where_series_are_drawn() {
        let panels = vec![
            panel("with", vec![series("cond", &curve(), false)]),
            panel("without", vec![]),
        ];
        let image = decode(&plot_png(&panels, 300, 200).unwrap());
        let blue = series_color(0);
        assert!(count_color(&image, (0, 300), (0, 200), blue) > 50);
        assert_eq!(count_color(&image, (300, 600), (0, 200), blue), 0);
    }

    #[test]
    fn same_series_index_same_colour_across_panels() {
        let panels = vec![
            panel(
                "two",
                vec![
                    series("a", &curve(), false),
                    series("b", &[(0.0, 0.1), (4.0, 0.2)], true),
                ],
            ),
            panel("one", vec![series("a", &curve(), true)]),
        ];
        let image = decode(&plot_png(&panels, 300, 200).unwrap());
        let (first, second) = (series_color(0), series_color(1));
        assert!(count_color(&image, (0, 300), (0, 200), first) > 20);
        assert!(count_color(&image, (300, 600), (0, 200), first) > 20);
        assert!(count_color(&image, (0, 300), (0, 200), second) > 20);
        assert_eq!(count_color(&image, (300, 600), (0, 200), second), 0);
    }

    #[test]
    fn title_text_renders() {
        // Only the title differs; its band at the top is blank without it,
        // so dark pixels there mean the embedded font really drew glyphs.
        let render = |title: &str| decode(&plot_png(&[panel(title, vec![])], 300, 200).unwrap());
        let blank = render("");
        let titled = render("Guidance");
        // Rows above the plot area, columns clear of the y-axis labels.
        let dark_in_title_band = |image: &(u32, u32, Vec<u8>)| {
            let (w, _, px) = image;
            let mut n = 0;
            for y in 0..26 {
                for x in 90..210 {
                    let i = ((y * w + x) * 3) as usize;
                    n += usize::from(px[i..i + 3].iter().all(|&c| c < 128));
                }
            }
            n
        };
        assert_eq!(dark_in_title_band(&blank), 0);
        assert!(dark_in_title_band(&titled) > 20);
        assert_ne!(blank.2, titled.2);
    }

    #[test]
    fn degenerate_data_does_not_panic() {
        let panels = vec![
            panel(
                "constant",
                vec![series("c", &[(0.0, 2.0), (1.0, 2.0)], false)],
            ),
            panel("single", vec![series("p", &[(3.0, -1.0)], true)]),
            panel("zeros", vec![series("z", &[(0.0, 0.0), (0.0, 0.0)], false)]),
            panel(
                "nan",
                vec![
                    series(
                        "n",
                        &[
                            (0.0, 1.0),
                            (1.0, f64::NAN),
                            (2.0, 3.0),
                            (f64::INFINITY, 4.0),
                        ],
                        false,
                    ),
                    series("all nan", &[(f64::NAN, f64::NAN)], false),
                ],
            ),
            panel("empty series", vec![series("e", &[], false)]),
        ];
        let image = decode(&plot_png(&panels, 200, 150).unwrap());
        assert_eq!((image.0, image.1), (1000, 150));
        // The single point still shows as a marker.
        assert!(count_color(&image, (200, 400), (0, 150), series_color(0)) > 0);
    }

    #[test]
    fn rejects_unusable_requests() {
        assert!(plot_png(&[], 300, 200).is_err());
        let one = [panel("p", vec![])];
        assert!(plot_png(&one, 0, 200).is_err());
        assert!(plot_png(&one, 300, 0).is_err());
        assert!(plot_png(&one, 300, MAX_SIDE + 1).is_err());
        let many = vec![panel("p", vec![]); 200];
        assert!(plot_png(&many, 300, 200).is_err());
        let huge = [panel(
            "huge",
            vec![series("h", &[(-f64::MAX, 0.0), (f64::MAX, 1.0)], false)],
        )];
        assert!(plot_png(&huge, 300, 200).is_err());
    }

    #[test]
    fn legend_goes_to_the_emptiest_corner() {
        let (x, y) = (0.0..1.0, 0.0..1.0);
        let rising = [(0.1, 0.1), (0.5, 0.5), (0.9, 0.9), (0.95, 0.95)];
        assert!(matches!(
            emptiest_corner(rising.into_iter(), &x, &y),
            SeriesLabelPosition::UpperLeft
        ));
        let saturating = [(0.1, 0.8), (0.5, 0.9), (0.9, 0.95), (0.9, 0.2)];
        assert!(matches!(
            emptiest_corner(saturating.into_iter(), &x, &y),
            SeriesLabelPosition::LowerLeft
        ));
        let falling = [(0.1, 0.9), (0.9, 0.1)];
        assert!(matches!(
            emptiest_corner(falling.into_iter(), &x, &y),
            SeriesLabelPosition::UpperRight
        ));
        let everywhere = [(0.9, 0.9), (0.1, 0.9), (0.9, 0.1), (0.1, 0.1)];
        assert!(matches!(
            emptiest_corner(everywhere.into_iter(), &x, &y),
            SeriesLabelPosition::UpperRight
        ));
    }

    #[test]
    fn axis_range_pads_and_widens() {
        assert_eq!(axis_range([0.0, 10.0].into_iter()).unwrap(), -0.5..10.5);
        assert_eq!(axis_range([5.0].into_iter()).unwrap(), 4.5..5.5);
        assert_eq!(axis_range([0.0, 0.0].into_iter()).unwrap(), -1.0..1.0);
        assert_eq!(axis_range(std::iter::empty()).unwrap(), 0.0..1.0);
    }
}
