//! `skiff.api.v1.WatchEvent`, written by hand (prost `extern_path`) so a
//! master can send an object as the bytes its store already holds: a
//! watch's change goes to every watcher of its kind (one per node for
//! Services and Endpoints), and decoding the object and encoding it again
//! for each was most of a watcher's cost. On the wire it is the message
//! `api.proto` declares: an embedded message and a bytes field are both
//! length-delimited, so clients decode it into [`WatchEvent::object`] as
//! ever, and never see the encoded form.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use crate::api::Object;

/// One change a watch reports.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct WatchEvent {
    /// `EventType` as its protobuf number.
    pub r#type: i32,
    /// For DELETED: the object as it was before deletion.
    pub object: Option<Object>,
    pub revision: u64,
    /// Only when the watch asked `with_previous`: the object before the
    /// change, when it changed what selectors read.
    pub previous: Option<Object>,
    /// The object already encoded: sent instead of [`Self::object`] when
    /// set. Only a master's watch sets it; decoding never does.
    pub encoded_object: Option<Bytes>,
    /// The same for [`Self::previous`].
    pub encoded_previous: Option<Bytes>,
}

impl WatchEvent {
    /// The event with its objects decoded (what an in-process reader of a
    /// watch, such as the REST API, wants).
    pub fn decoded(mut self) -> Result<WatchEvent, DecodeError> {
        use prost::Message;
        if let Some(bytes) = self.encoded_object.take() {
            self.object = Some(Object::decode(bytes)?);
        }
        if let Some(bytes) = self.encoded_previous.take() {
            self.previous = Some(Object::decode(bytes)?);
        }
        Ok(self)
    }
}

/// An object field from its message, or from the bytes it encodes to.
fn object_field(tag: u32, object: &Option<Object>, encoded: &Option<Bytes>, buf: &mut impl BufMut) {
    if let Some(bytes) = encoded {
        encoding::bytes::encode(tag, bytes, buf);
    } else if let Some(object) = object {
        encoding::message::encode(tag, object, buf);
    }
}

fn object_field_len(tag: u32, object: &Option<Object>, encoded: &Option<Bytes>) -> usize {
    if let Some(bytes) = encoded {
        encoding::bytes::encoded_len(tag, bytes)
    } else {
        object
            .as_ref()
            .map_or(0, |o| encoding::message::encoded_len(tag, o))
    }
}

impl prost::Message for WatchEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.r#type != 0 {
            encoding::int32::encode(1, &self.r#type, buf);
        }
        object_field(2, &self.object, &self.encoded_object, buf);
        if self.revision != 0 {
            encoding::uint64::encode(3, &self.revision, buf);
        }
        object_field(4, &self.previous, &self.encoded_previous, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::int32::merge(wire_type, &mut self.r#type, buf, ctx),
            2 => encoding::message::merge(
                wire_type,
                self.object.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            3 => encoding::uint64::merge(wire_type, &mut self.revision, buf, ctx),
            4 => encoding::message::merge(
                wire_type,
                self.previous.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        (if self.r#type != 0 {
            encoding::int32::encoded_len(1, &self.r#type)
        } else {
            0
        }) + object_field_len(2, &self.object, &self.encoded_object)
            + (if self.revision != 0 {
                encoding::uint64::encoded_len(3, &self.revision)
            } else {
                0
            })
            + object_field_len(4, &self.previous, &self.encoded_previous)
    }

    fn clear(&mut self) {
        *self = WatchEvent::default();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::api::object::Kind;
    use crate::v1;

    fn service(name: &str) -> Object {
        Object {
            kind: Some(Kind::Service(v1::Service {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn an_event_sent_as_stored_bytes_is_the_same_on_the_wire_and_decodes_as_ever() {
        let decoded = WatchEvent {
            r#type: 2,
            object: Some(service("web")),
            revision: 42,
            previous: Some(service("old")),
            ..Default::default()
        };
        let from_bytes = WatchEvent {
            r#type: 2,
            revision: 42,
            encoded_object: Some(service("web").encode_to_vec().into()),
            encoded_previous: Some(service("old").encode_to_vec().into()),
            ..Default::default()
        };
        let wire = decoded.encode_to_vec();
        assert_eq!(from_bytes.encode_to_vec(), wire);
        assert_eq!(from_bytes.encoded_len(), wire.len());
        let read = WatchEvent::decode(wire.as_slice()).unwrap();
        assert_eq!(read, decoded);
        assert_eq!(read.encoded_object, None);
        assert_eq!(from_bytes.decoded().unwrap(), decoded);
        // Unknown fields are skipped, as a generated message does.
        let mut extended = wire.clone();
        encoding::string::encode(9, &"later".to_owned(), &mut extended);
        assert_eq!(WatchEvent::decode(extended.as_slice()).unwrap(), decoded);
        let bad = WatchEvent {
            encoded_object: Some(Bytes::from_static(&[0x0a, 0xff])),
            ..Default::default()
        };
        assert!(bad.decoded().is_err());
    }
}
