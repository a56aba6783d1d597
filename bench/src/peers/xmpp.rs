//! XMPP (ejabberd): placeholder until the client is written.
