// The operators' page: revenue, purchases and proxy traffic over a period, and the top users.
// A user who is not a superuser is told so instead (the API would refuse them with 403 anyway).

import {
  ApiError,
  COLORS,
  api,
  bucketLabel,
  byId,
  cell,
  drawChart,
  formatBytes,
  formatCount,
  formatZnc,
  periodSwitch,
  row,
  setText,
  startPage,
  windowText,
} from "./common.js";

const NOT_AN_OPERATOR =
  "This page is for operators. Your account is not a superuser, so it cannot see the " +
  "figures of the whole service; your own are on the My account page.";

let series = [];

// Money arrives as strings with two decimals; a chart needs numbers, and only draws them.
const amount = (value) => Number.parseFloat(value);

function tooltipTitle(items) {
  const bucket = series[items[0].dataIndex];
  return windowText({ start_time: bucket.start, end_time: bucket.end });
}

function chartOptions(extra = {}) {
  return {
    plugins: { tooltip: { callbacks: { title: tooltipTitle } } },
    ...extra,
  };
}

function renderTotals(stats) {
  setText("stats-window", windowText(stats));
  setText("revenue", formatZnc(stats.revenue_znc));
  setText("refunds", formatZnc(stats.refunds_znc));
  setText("bonuses", formatZnc(stats.referral_bonuses_paid_znc));
  setText("new-users", formatCount(stats.new_users));
  setText("token-purchases", formatCount(stats.token_purchases));
  setText("bundle-purchases", formatCount(stats.bundle_purchases));
  setText("proxy-requests", formatCount(stats.total_proxy_requests));
  setText("proxy-bytes", formatBytes(stats.total_bytes_transferred));
  setText("active-users", formatCount(stats.active_users));
  setText("daily-active-users", formatCount(stats.daily_active_users));
}

function renderCharts(stats) {
  const labels = stats.series.map((bucket) => bucketLabel(bucket.start, stats.bucket));
  const column = (key, convert = (value) => value) =>
    stats.series.map((bucket) => convert(bucket[key]));
  drawChart(
    byId("revenue-chart"),
    "bar",
    {
      labels,
      datasets: [
        { label: "Revenue (ZNC)", data: column("revenue_znc", amount), backgroundColor: COLORS.teal },
        { label: "Refunds (ZNC)", data: column("refunds_znc", amount), backgroundColor: COLORS.red },
        {
          label: "Referral bonuses (ZNC)",
          data: column("referral_bonuses_paid_znc", amount),
          backgroundColor: COLORS.purple,
        },
      ],
    },
    chartOptions({ scales: { y: { beginAtZero: true } } }),
  );
  drawChart(
    byId("purchases-chart"),
    "bar",
    {
      labels,
      datasets: [
        { label: "Tokens", data: column("token_purchases"), backgroundColor: COLORS.blue },
        { label: "Bundles", data: column("bundle_purchases"), backgroundColor: COLORS.orange },
      ],
    },
    chartOptions({
      scales: {
        x: { stacked: true },
        y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
      },
    }),
  );
  drawChart(
    byId("traffic-chart"),
    "bar",
    {
      labels,
      datasets: [
        {
          label: "Proxy requests",
          data: column("proxy_requests"),
          backgroundColor: COLORS.blue,
          yAxisID: "y",
          order: 2,
        },
        {
          type: "line",
          label: "Active users",
          data: column("active_users"),
          borderColor: COLORS.orange,
          backgroundColor: COLORS.orange,
          pointRadius: 2,
          yAxisID: "users",
          order: 1,
        },
      ],
    },
    chartOptions({
      scales: {
        y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "Requests" } },
        users: {
          position: "right",
          beginAtZero: true,
          ticks: { precision: 0 },
          grid: { drawOnChartArea: false },
          title: { display: true, text: "Users" },
        },
      },
    }),
  );
}

function renderTopUsers(stats) {
  const table = byId("top-users");
  table.tBodies[0].replaceChildren(
    ...stats.top_users.map((user, index) =>
      row([
        cell(String(index + 1)),
        cell(user.email),
        cell(formatCount(user.requests), "num"),
        cell(formatBytes(user.bytes_transferred), "num"),
      ]),
    ),
  );
  table.hidden = stats.top_users.length === 0;
  table.parentElement.querySelector(".empty").hidden = stats.top_users.length > 0;
}

async function load(period) {
  const error = byId("stats-error");
  try {
    const stats = await api(`/analytics/admin/global-stats?period=${encodeURIComponent(period)}`);
    error.hidden = true;
    series = stats.series;
    renderTotals(stats);
    renderCharts(stats);
    renderTopUsers(stats);
    byId("content").dataset.period = period;
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 403) {
      throw new ApiError(403, NOT_AN_OPERATOR);
    }
    if (!(failure instanceof ApiError)) throw failure;
    error.textContent = failure.message;
    error.hidden = false;
  }
}

startPage(async (me) => {
  if (!me.is_superuser) {
    throw new ApiError(403, NOT_AN_OPERATOR);
  }
  byId("content").hidden = false;
  await periodSwitch(byId("content").querySelector(".periods"), load);
  byId("main").dataset.state = "ready";
});
