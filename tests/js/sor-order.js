// The seed's "Correct (Using SOR)" example, verbatim except the baseURL line, plus the
// call that runs it.
const { sign, apiKey } = require("./auth-helper");
const axios = require("axios");
const baseURL = process.env.SOR_API_URL || "http://127.0.0.1:8090";

async function placeSOROrder() {
  const endpoint = "/api/v3/sor/order";
  const timestamp = Date.now();

  const queryString = [
    "symbol=BTCUSDT",
    "side=BUY",
    "type=MARKET",
    "quantity=10",
    `timestamp=${timestamp}`,
  ].join("&");

  const signature = sign(queryString);

  try {
    const res = await axios.post(
      `${baseURL}${endpoint}?${queryString}&signature=${signature}`,
      null,
      {
        headers: { "X-MBX-APIKEY": apiKey },
      },
    );
    // Response includes fills array with execution details
    console.log("SOR Order Fills:", res.data.fills);
  } catch (err) {
    console.error("SOR Order Failed:", err.response.data);
  }
}

placeSOROrder();
