// The user page: balance, usage for a period (numbers and a chart), tokens, referrals.

import {
  COLORS,
  bucketLabel,
  byId,
  cell,
  clearSectionError,
  drawChart,
  formatBytes,
  formatCount,
  formatDuration,
  formatMinutes,
  formatMoment,
  formatZnc,
  periodSwitch,
  row,
  setText,
  showSectionError,
  startPage,
  windowText,
  api,
} from "./common.js";

// The most tokens and referees one request may list (the API's largest page).
const PAGE = 100;
// How often the "time left" of running tokens is recounted.
const TICK_MS = 30_000;

let usageSeries = [];

async function inSection(section, work) {
  try {
    clearSectionError(section);
    await work();
  } catch (error) {
    showSectionError(section, error);
  }
}

async function loadBalance() {
  const wallet = await api("/currency/balance");
  setText("balance", formatZnc(wallet.balance));
}

async function loadUsage(period) {
  const usage = await api(`/analytics/usage?period=${encodeURIComponent(period)}`);
  usageSeries = usage.series;
  setText("total-requests", formatCount(usage.total_requests));
  setText("total-bytes", formatBytes(usage.total_bytes_transferred));
  setText("active-sessions", formatCount(usage.active_sessions));
  setText("active-tokens", formatCount(usage.active_tokens));
  setText("avg-session", formatMinutes(usage.avg_session_duration_minutes));
  setText("usage-window", windowText(usage));
  drawChart(
    byId("usage-chart"),
    "bar",
    {
      labels: usage.series.map((bucket) => bucketLabel(bucket.start, usage.bucket)),
      datasets: [
        {
          label: "Requests",
          data: usage.series.map((bucket) => bucket.requests),
          backgroundColor: COLORS.blue,
          yAxisID: "y",
          order: 2,
        },
        {
          type: "line",
          label: "Data transferred",
          data: usage.series.map((bucket) => bucket.bytes_transferred),
          borderColor: COLORS.orange,
          backgroundColor: COLORS.orange,
          pointRadius: 2,
          yAxisID: "bytes",
          order: 1,
        },
      ],
    },
    {
      scales: {
        y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "Requests" } },
        bytes: {
          position: "right",
          beginAtZero: true,
          grid: { drawOnChartArea: false },
          ticks: { callback: (value) => formatBytes(value) },
        },
      },
      plugins: {
        tooltip: {
          callbacks: {
            title: (items) => windowText({
              start_time: usageSeries[items[0].dataIndex].start,
              end_time: usageSeries[items[0].dataIndex].end,
            }),
            label: (item) =>
              item.dataset.yAxisID === "bytes"
                ? `Data transferred: ${formatBytes(item.raw)}`
                : `Requests: ${formatCount(item.raw)}`,
          },
        },
      },
    },
  );
  byId("usage").dataset.period = period;
}

const STATES = {
  ready: "Ready",
  active: "Active",
  expired: "Expired",
  revoked: "Revoked",
};

function timeLeftText(token, seconds) {
  if (token.status === "ready") return `${formatDuration(seconds)} from first use`;
  if (token.status === "active") return formatDuration(seconds);
  return "—";
}

async function loadTokens() {
  const page = await api(`/tokens/my-tokens?limit=${PAGE}`);
  const section = byId("tokens");
  const table = byId("tokens-table");
  const body = table.tBodies[0];
  const loadedAt = Date.now();
  const running = [];
  body.replaceChildren(
    ...page.items.map((token) => {
      const state = document.createElement("span");
      state.className = `state state-${token.status}`;
      state.textContent = STATES[token.status] ?? token.status;
      const stateCell = document.createElement("td");
      stateCell.append(state);
      const prefix = document.createElement("code");
      prefix.textContent = `${token.token_prefix}…`;
      const prefixCell = document.createElement("td");
      prefixCell.append(prefix);
      const left = cell(timeLeftText(token, token.time_remaining_seconds));
      if (token.status === "active") {
        running.push({ token, left, deadline: loadedAt + token.time_remaining_seconds * 1000 });
      }
      const tr = row([
        prefixCell,
        cell(token.scope === "full" ? "Full" : "Certificates only"),
        cell(`${token.duration_hours} h`),
        stateCell,
        left,
        cell(formatMoment(token.expires_at)),
      ]);
      tr.dataset.tokenId = token.id;
      return tr;
    }),
  );
  table.hidden = page.items.length === 0;
  section.querySelector(".empty").hidden = page.items.length > 0;
  if (running.length > 0) {
    window.setInterval(() => {
      for (const { token, left, deadline } of running) {
        left.textContent = timeLeftText(token, (deadline - Date.now()) / 1000);
      }
    }, TICK_MS);
  }
}

async function loadReferrals() {
  const summary = await api(`/users/me/referrals?limit=${PAGE}`);
  setText("referral-code", summary.referral_code);
  setText("referral-count", formatCount(summary.total_referrals));
  setText("referral-earned", formatZnc(summary.bonus_earned));
  setText("referral-pending", formatZnc(summary.bonus_pending));
  const table = byId("referees-table");
  table.tBodies[0].replaceChildren(
    ...summary.referrals.map((referee) =>
      row([cell(referee.username), cell(formatMoment(referee.joined_at))]),
    ),
  );
  table.hidden = summary.referrals.length === 0;
}

startPage(async () => {
  byId("content").hidden = false;
  const usage = byId("usage");
  await Promise.all([
    loadBalance(),
    inSection(byId("tokens"), loadTokens),
    inSection(byId("referrals"), loadReferrals),
    periodSwitch(usage.querySelector(".periods"), (period) =>
      inSection(usage, () => loadUsage(period)),
    ),
  ]);
  byId("main").dataset.state = "ready";
});
