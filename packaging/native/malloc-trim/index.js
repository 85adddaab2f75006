'use strict'
// the addon node-gyp built at install (or the image build compiled for the device's CPU)
module.exports = require('./build/Release/malloc_trim.node')
