// Configures protobufjs before the generated code (src/gen/tern.js) is evaluated: 64-bit
// fields are plain numbers (every seq and timestamp fits in 2^53), also in the defaults
// the generated classes compute when they load. Import this module before ./gen/tern.js.
import $protobuf from 'protobufjs/minimal.js';

$protobuf.util.Long = undefined;
$protobuf.configure();

export default $protobuf;
