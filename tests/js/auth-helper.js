// The `./auth-helper` the seed's snippet requires: the API key and HMAC-SHA256 signing,
// as Binance documents it. The key and secret come from the environment.
const crypto = require("crypto");

const apiKey = process.env.BINANCE_API_KEY;
const apiSecret = process.env.BINANCE_API_SECRET;

function sign(queryString) {
  return crypto.createHmac("sha256", apiSecret).update(queryString).digest("hex");
}

module.exports = { sign, apiKey };
