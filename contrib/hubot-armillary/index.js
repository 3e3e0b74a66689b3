'use strict'
// Loaded by Hubot from external-scripts.json: ["hubot-armillary"].
const path = require('node:path')

module.exports = async (robot) => {
  await robot.loadFile(path.resolve(__dirname, 'scripts'), 'armillary.js')
}
