/* Sealed objects, the second decoder (decoder.h): NAME.sealed
 * (common/sealed.h, weightfs-pack --encrypt) shown as the file NAME with
 * its plain size, each block decrypted and authenticated as it is read.
 * Keys: -o key_file. The disk tier keeps their blocks sealed again under
 * the object's tier key (decoder_ops seal_block): nothing decrypted is
 * written to a disk. */
#ifndef WFS_FS_SEALED_OBJECT_H
#define WFS_FS_SEALED_OBJECT_H

/* A suffix objects must have to be considered. */
#define SEALED_OBJECT_SUFFIX ".sealed"

struct decoder_ops;
extern const struct decoder_ops sealed_decoder_ops;

#endif
